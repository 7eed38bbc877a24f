"""The viewer: ``pimmi serve`` (a local web application on a workspace) and ``pimmi report`` (the same
pages as static HTML). ``model`` computes what the pages show, ``pages`` renders them, ``views`` and ``app``
serve them, ``report`` writes them to a folder."""
