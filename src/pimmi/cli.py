"""The command line: parses options, calls the library, turns its errors into one-line messages.

Data goes to stdout (or -o), people's messages and progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pimmi import __version__
from pimmi.executor import keep_freed_memory
from pimmi.paths import shown_path
from pimmi.settings import (
    IGNORED_PIMMI_KEYS,
    PRESETS,
    Settings,
    SettingsError,
    config_text,
    load_settings,
    option_name,
    setting_fields,
)

log = logging.getLogger("pimmi")
MAX_ERRORS_SHOWN = 30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pimmi",
        description="Find copies of images, total or partial, in large corpora, and cluster them.",
        epilog="Every configuration key is also a global option placed before the command, "
        "e.g. 'pimmi --nb-threads 2 fill IMAGES INDEX' ('pimmi config-params' lists them).",
    )
    p.add_argument("--version", action="version", version=f"pimmi {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr (-vv: debug)")
    p.add_argument("--silent", action="store_true", help="no progress bars nor summaries")
    p.add_argument(
        "--preset",
        metavar="NAME",
        help=f"a named bundle of settings: {', '.join(sorted(PRESETS))} (fewer keypoints: faster, partial copies "
        "found less often); options given beside it win",
    )
    for f in setting_fields():
        p.add_argument(
            f"--{option_name(f.name)}",
            dest=f"setting_{f.name}",
            default=None,
            metavar="VALUE",
            help=argparse.SUPPRESS,
        )
    for key in sorted(IGNORED_PIMMI_KEYS):  # PIMMI's switches that have no meaning here: accepted, ignored
        p.add_argument(f"--{option_name(key)}", dest=f"ignored_{key}", default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("fill", help="extract features of the images in IMAGE_DIR and index them in INDEX_DIR")
    c.add_argument("image_dir")
    c.add_argument("index_dir", help="the workspace folder (created if needed)")
    c.add_argument("-e", "--erase", action="store_true", help="start over: drop the existing workspace content")
    c.add_argument("-f", "--force", action="store_true", help="accepted for PIMMI compatibility (pimmi never prompts)")
    c.add_argument("--wait", action="store_true", help="wait for another command writing the workspace to end")
    c.add_argument("-n", "--nb-img", type=int, help="only the first N images (sorted by path)")
    c.add_argument(
        "--index-type",
        dest="setting_index_type",
        default=argparse.SUPPRESS,
        help="FAISS factory string (default: auto)",
    )
    _config_option(c)

    c = sub.add_parser(
        "query",
        help="find, for each image of IMAGE_DIR, its copies among the indexed images",
        epilog="Output columns: " + ", ".join(_query_columns()),
    )
    c.add_argument("image_dir")
    c.add_argument("index_dir")
    c.add_argument("-o", "--output", help="CSV file to write (default: stdout)")
    c.add_argument("--output-template", help="write several CSV files: TEMPLATE1.csv, TEMPLATE2.csv ... (as PIMMI)")
    c.add_argument("--nb-per-split", type=int, default=10000, help="images per pack (the pack_id column)")
    c.add_argument("--nb-per-file", type=int, help="rows per file with --output-template (default: a file per pack)")
    c.add_argument("--wait", action="store_true", help="wait for another command writing the workspace to end")
    c.add_argument("--simple", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("-n", "--nb-img", type=int, help="only the first N images (sorted by path)")
    c.add_argument(
        "--requery",
        action="store_true",
        help="search every image again (default: only those whose stored matches do not stand: new images, "
        "and those queried before the index gained images that no search of this run finds them from)",
    )
    _config_option(c)

    c = sub.add_parser(
        "clusters",
        help="cluster the images from their verified matches",
        epilog="Output columns: path, image_id, nb_points, degree, cluster_id, quality",
    )
    c.add_argument("index_dir")
    c.add_argument("query_csv", nargs="?", help="query CSV, glob or template (default: matches in the workspace)")
    c.add_argument("-o", "--output", help="CSV file to write (default: stdout)")
    _clusters_options(c, clusters_file=False)

    c = sub.add_parser("viz", help="write the JSON graph that PIMMI's viewer reads")
    c.add_argument("index_dir")
    c.add_argument("clusters_csv")
    c.add_argument("-o", "--output", help="JSON file to write (default: stdout)")
    c.add_argument("query_csv", nargs="?", help="query CSV (default: matches in the workspace)")

    c = sub.add_parser(
        "serve",
        help="browse the clusters in a web browser: clusters, a cluster's graph, why two images match, review",
        epilog="Binds 127.0.0.1 (this machine only) unless --host says otherwise. Ctrl-C stops it.",
    )
    c.add_argument("index_dir")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    c.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free port)")
    c.add_argument("--open", action="store_true", help="open the viewer in the default web browser")
    c.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the server is reached by",
    )
    _clusters_options(c)

    c = sub.add_parser("report", help="write the viewer's pages as static HTML with thumbnails, to send")
    c.add_argument("index_dir")
    c.add_argument("-o", "--output", required=True, help="folder to write (index.html is its first page)")
    _clusters_options(c)

    c = sub.add_parser(
        "posts",
        help="import the posts that published the images (a CSV: post id, date, account, url, text, media files)",
        epilog="Columns are found by name: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in _post_columns().items())
        + ". An import replaces the previous one.",
    )
    c.add_argument("index_dir")
    c.add_argument("posts_csv")
    for key in _post_columns():
        c.add_argument(
            f"--{key.replace('_', '-')}-column",
            dest=f"column_{key}",
            metavar="NAME",
            help=f"the column holding the {key.replace('_', ' ')}",
        )
    c.add_argument("--wait", action="store_true", help="wait for another command writing the workspace to end")
    c.add_argument("--separator", default="|", help="between the media files of one post (default: |)")

    c = sub.add_parser(
        "provenance",
        help="the most likely parent of every clustered image (which image each was made from)",
        epilog="Output columns: path, parent, cluster_id, relation, confidence, image_id, parent_ids",
    )
    c.add_argument("index_dir")
    c.add_argument("-o", "--output", help="CSV file to write (default: stdout)")
    c.add_argument("--gexf", metavar="FILE", help="also write the derivation forest for Gephi (.gexf or .graphml)")
    c.add_argument("--cues", help="the cues to use, comma-separated (default: all): " + ", ".join(_cues()))
    _clusters_options(c, clusters_file=False)

    c = sub.add_parser(
        "timeline",
        help="one row per cluster with its posts: first and last post, accounts, peak day, likely original",
        epilog="Output columns: " + ", ".join(_summary_columns()),
    )
    c.add_argument("index_dir")
    c.add_argument("-o", "--output", help="CSV file to write (default: stdout)")
    c.add_argument("--plots", metavar="DIR", help="also write a timeline per cluster (PNG and SVG) and an overview")
    _clusters_options(c, clusters_file=False)

    c = sub.add_parser("status", help="what a workspace holds: images by status, index, runs, the writer at work")
    c.add_argument("index_dir")
    c.add_argument("--json", action="store_true", help="print JSON instead of text")

    c = sub.add_parser("eval", help="precision, recall and F1 of clusters against a truth column")
    c.add_argument("file")
    c.add_argument("--predicted-column", default="cluster_id")
    c.add_argument("--truth-column", default="truth")
    c.add_argument("--query-column", default=None, help="rows whose value is 'original' are queries")
    c.add_argument("--ignore-missing", action="store_true", help="leave out rows with no predicted cluster")
    c.add_argument("--csv", action="store_true", help="print CSV instead of text")

    c = sub.add_parser("create-config", help="write a configuration file with every key, its default and help")
    c.add_argument("path")
    sub.add_parser("config-params", help="list the configuration keys (usable as global options)")
    return p


def _post_columns() -> dict[str, tuple[str, ...]]:
    from pimmi.posts import COLUMNS

    return COLUMNS


def _cues() -> tuple[str, ...]:
    from pimmi.provenance import CUES

    return CUES


def _summary_columns() -> list[str]:
    from pimmi.timeline import summary_columns

    return summary_columns()


def _clusters_options(c: argparse.ArgumentParser, clusters_file: bool = True) -> None:
    if clusters_file:
        c.add_argument(
            "--clusters", metavar="FILE", help="a clusters CSV to show (default: computed from the workspace)"
        )
    c.add_argument(
        "--algo",
        dest="setting_algo",
        default=argparse.SUPPRESS,
        help="parts (default), components, louvain or leiden",
    )
    c.add_argument(
        "--nb-match-ransac",
        dest="setting_nb_match_ransac",
        default=argparse.SUPPRESS,
        help="least inliers for an edge",
    )
    _config_option(c)


def _config_option(c: argparse.ArgumentParser) -> None:
    c.add_argument("--config-path", help="YAML configuration file ('pimmi create-config' writes one)")


def _query_columns() -> list[str]:
    from pimmi.query import csv_columns

    return csv_columns()


def cli_reference() -> str:
    """The command-line reference in Markdown, from the parser itself (docs/cli.md; a test keeps them equal)."""
    parser = build_parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the parser by `make docs` (`python -m pimmi.cli reference`, Python "
        f"{sys.version_info.major}.{sys.version_info.minor}'s argparse); a test fails when it drifts.",
        "",
        "```",
        _plain_help(parser),
        "```",
        "",
        "Every setting is also a global option, placed before the command (`pimmi config-params` lists them with",
        "their defaults and help; so does the last section here).",
        "",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        lines += [f"## pimmi {name}", "", "```", _plain_help(command), "```", ""]
    lines += ["# Settings", ""]
    defaults = Settings()
    for f in setting_fields():
        default = "the number of CPUs" if f.name == "nb_threads" else f"`{getattr(defaults, f.name)!r}`"
        lines.append(f"- `--{option_name(f.name)}` (default {default}): {f.metadata['help']}")
    lines.append("")
    for name, values in sorted(PRESETS.items()):
        lines.append(f"- `--preset {name}`: " + " ".join(f"`--{option_name(k)} {v}`" for k, v in values.items()))
    return "\n".join(lines) + "\n"


def _plain_help(parser: argparse.ArgumentParser) -> str:
    """Help at a fixed width, whatever the terminal (the reference must not depend on it)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def resolve_settings(args: argparse.Namespace, workspace_dir: str | None = None) -> Settings:
    """The settings of this command; with ``workspace_dir``, those it was built with are the defaults, so
    that a workspace filled with other extraction settings needs them given only once."""
    from pimmi.workspace import stored_feature_settings

    overrides = {k[len("setting_") :]: v for k, v in vars(args).items() if k.startswith("setting_") and v is not None}
    base = stored_feature_settings(workspace_dir) if workspace_dir else None
    settings = load_settings(getattr(args, "config_path", None), overrides, args.preset, base)
    log.info("settings: %s", settings.to_dict())
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_pimmi_silent(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args.verbose, args.silent)
    keep_freed_memory()
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader (head, less) went away: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(
            "pimmi: interrupted; what was done is saved, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except (SettingsError, FileNotFoundError, ValueError, OSError, ImportError) as e:
        print(f"pimmi: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from pimmi.workspace import WorkspaceBusy, WorkspaceError

        if isinstance(e, WorkspaceBusy):
            print(f"pimmi: {e}", file=sys.stderr)
            return 75  # EX_TEMPFAIL: try again later
        if isinstance(e, WorkspaceError):
            print(f"pimmi: error: {e}", file=sys.stderr)
            return 1
        raise


def _pimmi_silent(argv: list[str]) -> list[str]:
    """PIMMI's ``--silent VALUE`` becomes our ``--silent`` flag (or nothing)."""
    out = []
    i = 0
    while i < len(argv):
        if argv[i] == "--silent" and i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false", "1", "0"):
            if argv[i + 1].lower() in ("true", "1"):
                out.append("--silent")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _setup_logging(verbose: int, silent: bool) -> None:
    level = logging.ERROR if silent else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pimmi: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.silent:
        print(text, file=sys.stderr)


def cmd_fill(args: argparse.Namespace) -> int:
    from pimmi.fill import fill
    from pimmi.workspace import writer_lock

    with writer_lock(args.index_dir, "fill", args.wait):  # before the settings are read: an erase waits too
        settings = resolve_settings(args, None if args.erase else args.index_dir)
        t0 = time.perf_counter()
        r = fill(
            args.image_dir,
            args.index_dir,
            settings,
            erase=args.erase,
            nb_img=args.nb_img,
            progress=not args.silent,
        )
    for path, reason in r.errors[:MAX_ERRORS_SHOWN]:
        _say(args, f"pimmi: skipped {path}: {reason}")
    if len(r.errors) > MAX_ERRORS_SHOWN:
        _say(
            args,
            f"pimmi: ... and {len(r.errors) - MAX_ERRORS_SHOWN} more unusable images "
            f"(status 'error' in {Path(args.index_dir) / 'pimmi.sqlite'})",
        )
    changes = ", ".join(f"{n} {what}" for what, n in vars(r.changes).items() if n)
    if changes:
        _say(args, f"pimmi fill: since the last run: {changes}")
    _say(
        args,
        f"pimmi fill: {r.listed} images listed, {r.extracted} extracted, {r.duplicates} exact duplicates, "
        f"{len(r.errors)} unusable; index {r.index_type}: {r.index_points} descriptors of "
        f"{r.indexed_images} images ({time.perf_counter() - t0:.1f} s)",
    )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from pimmi.workspace import writer_lock

    with writer_lock(args.index_dir, "query", args.wait):
        return _query(args)


def _query(args: argparse.Namespace) -> int:
    from pimmi.query import QueryStats, csv_columns, csv_row, query

    settings = resolve_settings(args, args.index_dir)
    stats = QueryStats()
    t0 = time.perf_counter()
    matches = query(
        args.image_dir,
        args.index_dir,
        settings,
        nb_img=args.nb_img,
        nb_per_pack=args.nb_per_split,
        progress=not args.silent,
        stats=stats,
        requery=args.requery,
    )
    rows = (csv_row(m) for m in matches)
    if args.output_template:
        _write_packs(args.output_template, csv_columns(), rows, args.nb_per_file)
    else:
        _write_csv(args.output, csv_columns(), rows)
    _say(
        args,
        f"pimmi query: {stats.queried} images searched, {stats.matches} matches "
        f"({stats.verified_pairs} pairs verified, {time.perf_counter() - t0:.1f} s)",
    )
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    from pimmi.clusters import clusters, csv_columns, expand_csv_argument, read_match_csv, workspace_clusters
    from pimmi.workspace import Workspace

    settings = resolve_settings(args)
    with Workspace(args.index_dir, create=False) as ws:
        if args.query_csv:
            images = {r.id: r for r in ws.images()}
            rows = clusters(
                read_match_csv(expand_csv_argument(args.query_csv)),
                images,
                settings.nb_match_ransac,
                settings.algo,
            )
        else:
            rows = workspace_clusters(ws, settings)
    columns = csv_columns(settings.algo)
    _write_csv(args.output, columns, ([getattr(r, c) for c in columns] for r in rows))
    n_clusters = len({r.cluster_id for r in rows})
    _say(args, f"pimmi clusters: {n_clusters} clusters of {len(rows)} images")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from pimmi.clusters import expand_csv_argument, read_match_csv, workspace_links
    from pimmi.viz import viz_json
    from pimmi.workspace import Workspace

    with Workspace(args.index_dir, create=False) as ws:
        images = {r.id: r for r in ws.images()}
        edges = read_match_csv(expand_csv_argument(args.query_csv)) if args.query_csv else workspace_links(ws)
    text = viz_json(args.clusters_csv, edges, images)
    if args.output:
        _atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import webbrowser

    from pimmi.viewer.app import Viewer, allowed_hosts, bind, create_app, serve

    settings = resolve_settings(args, args.index_dir)
    viewer = Viewer(args.index_dir, settings, args.clusters)
    try:
        snap = viewer.snapshot()  # computed before the first page is asked for
        hosts = allowed_hosts(args.host, args.allow_host)
        sock = bind(args.host, args.port)
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{shown}:{port}/"
        if "*" in hosts:
            print(
                f"pimmi: warning: listening on {args.host}: anyone who can reach this machine can browse the images "
                "and mark matches",
                file=sys.stderr,
            )
        print(
            f"pimmi: serving {args.index_dir} on {url} ({len(snap.clusters)} clusters)",
            file=sys.stderr,
            flush=True,
        )
        if args.open:
            webbrowser.open(url.replace("0.0.0.0", "127.0.0.1"))
        serve(create_app(viewer, hosts), sock, verbose=args.verbose > 0)
    finally:
        viewer.close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pimmi.viewer.report import write_report

    settings = resolve_settings(args, args.index_dir)
    t0 = time.perf_counter()
    r = write_report(args.index_dir, args.output, settings, args.clusters, progress=not args.silent)
    _say(
        args,
        f"pimmi report: {r.clusters} clusters, {r.images} images, {r.pairs} pairs in {args.output} "
        f"(open {Path(args.output) / 'index.html'}; {time.perf_counter() - t0:.1f} s)",
    )
    return 0


def cmd_posts(args: argparse.Namespace) -> int:
    from pimmi.posts import import_posts, report_lines

    columns = {k[len("column_") :]: v for k, v in vars(args).items() if k.startswith("column_") and v}

    from pimmi.workspace import writer_lock

    with writer_lock(args.index_dir, "posts", args.wait):
        report = import_posts(args.index_dir, args.posts_csv, columns, args.separator, progress=not args.silent)
    for line in report_lines(report, args.posts_csv):
        _say(args, line)
    return 0


def _provenance_rows(args: argparse.Namespace, ws, settings: Settings, rows) -> list:
    from pimmi.provenance import CUES, provenance

    cues = CUES if not getattr(args, "cues", None) else tuple(c.strip() for c in args.cues.split(","))
    unknown = sorted(set(cues) - set(CUES))
    if unknown:
        raise SettingsError(f"--cues: unknown {', '.join(unknown)} (known: {', '.join(CUES)})")
    return provenance(ws, settings, cues, progress=not args.silent, rows=rows)


def cmd_provenance(args: argparse.Namespace) -> int:
    from pimmi.clusters import workspace_clusters
    from pimmi.provenance import ProvenanceRow, write_gexf
    from pimmi.workspace import Workspace

    settings = resolve_settings(args, args.index_dir)
    with Workspace(args.index_dir, create=False) as ws:
        rows = _provenance_rows(args, ws, settings, workspace_clusters(ws, settings))
    columns = [f for f in ProvenanceRow.__dataclass_fields__]
    _write_csv(args.output, columns, ([getattr(r, c) for c in columns] for r in rows))
    if args.gexf:
        write_gexf(rows, args.gexf)
    roots = sum(1 for r in rows if not r.parent)
    _say(args, f"pimmi provenance: {len(rows)} images, {roots} likely originals")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from pimmi.clusters import workspace_clusters
    from pimmi.posts import has_posts
    from pimmi.timeline import plot_timelines, summaries, summary_columns
    from pimmi.workspace import Workspace

    settings = resolve_settings(args, args.index_dir)
    with Workspace(args.index_dir, create=False) as ws:
        if not has_posts(ws):
            _say(args, f"pimmi timeline: no posts in {args.index_dir} ('pimmi posts' imports them): no dates")
        rows = workspace_clusters(ws, settings)
        prov = _provenance_rows(args, ws, settings, rows)
        table = summaries(ws, rows, prov)
        files = plot_timelines(ws, rows, prov, args.plots) if args.plots else []
    columns = summary_columns()
    _write_csv(args.output, columns, ([getattr(r, c) for c in columns] for r in table))
    _say(
        args,
        f"pimmi timeline: {len(table)} clusters" + (f", {len(files)} plot files in {args.plots}" if files else ""),
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pimmi.status import status_json, status_text, workspace_status

    s = workspace_status(args.index_dir)
    print(status_json(s) if args.json else status_text(s))
    return 1 if "damaged" in s else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pimmi.evaluate import evaluate

    scores = evaluate(args.file, args.truth_column, args.predicted_column, args.query_column, args.ignore_missing)
    if args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(["metric", "value"])
        for k, v in scores.items():
            w.writerow([k, f"{v:.4f}"])
    else:
        for k, v in scores.items():
            print(f"{k}: {v:.4f}")
    return 0


def cmd_create_config(args: argparse.Namespace) -> int:
    _atomic_write_text(args.path, config_text())
    _say(args, f"pimmi: wrote {args.path}")
    return 0


def cmd_config_params(args: argparse.Namespace) -> int:
    defaults = Settings()
    for f in setting_fields():
        print(f"--{option_name(f.name)} (default {getattr(defaults, f.name)!r}): {f.metadata['help']}")
    for name, values in sorted(PRESETS.items()):
        print(f"--preset {name}: " + " ".join(f"--{option_name(k)} {v}" for k, v in values.items()))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fill": cmd_fill,
    "query": cmd_query,
    "clusters": cmd_clusters,
    "viz": cmd_viz,
    "posts": cmd_posts,
    "provenance": cmd_provenance,
    "timeline": cmd_timeline,
    "status": cmd_status,
    "serve": cmd_serve,
    "report": cmd_report,
    "eval": cmd_eval,
    "create-config": cmd_create_config,
    "config-params": cmd_config_params,
}


def _write_csv(path: str | None, header: list[str], rows: Iterable[list]) -> None:
    if path is None:
        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(_shown(r) for r in rows)
        sys.stdout.flush()
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(_shown(r) for r in rows)
    os.replace(tmp, path)


def _shown(row: list) -> list:
    """A row with file names that are not UTF-8 escaped (the catalogue keeps them as they are)."""
    return [shown_path(v) if isinstance(v, str) and not v.isascii() else v for v in row]


def _write_packs(template: str, header: list[str], rows: Iterable[list], rows_per_file: int | None) -> None:
    """Files TEMPLATE1.csv, TEMPLATE2.csv ... (PIMMI's naming; a ``{}`` in the template takes the number):
    ``rows_per_file`` rows each, or one file per pack of query images. Rows come in pack order and are
    written as they come."""
    pack_col = header.index("pack_id")
    if rows_per_file:
        files = (list(g) for _, g in itertools.groupby(enumerate(rows), key=lambda r: r[0] // rows_per_file))
        files = ([row for _, row in f] for f in files)
    else:
        files = (list(g) for _, g in itertools.groupby(rows, key=lambda r: r[pack_col]))
    for number, file_rows in enumerate(files, start=1):
        name = (
            template.replace("{}", str(number)) if "{}" in template else f"{template.removesuffix('.csv')}{number}.csv"
        )
        _write_csv(name, header, file_rows)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__" and sys.argv[1:] == ["reference"]:
    sys.stdout.write(cli_reference())
