from pimmi.cli import run

run()
