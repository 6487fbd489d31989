"""`semgir-engine report`: results file -> one self-contained HTML page."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("results", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), multiple=True, metavar="MANIFEST.csv",
              help="Ground truth (CSV: path,label,source; repeat for several): adds the ROC curve, confusion matrix and per-source figures.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="The HTML file to write.")
@click.option("--title", default=None)
@click.option("--thumb-px", type=click.IntRange(16, 1024), default=160, show_default=True,
              help="Size of the embedded thumbnails.")
@click.option("--embed-limit", type=click.IntRange(0), default=2000, show_default=True,
              help="Embed thumbnails for this many rows; link the image files (file: URIs) beyond.")
@click.option("--page-size", type=click.Choice(["25", "100", "500", "0"]), default="100", show_default=True,
              help="Rows per page when the page opens (0 = all).")
def report_cmd(results, labels, out, title, thumb_px, embed_limit, page_size):
    """Write an HTML report of a scoring run: images side by side with their regenerations, scores, plots."""
    from . import build_report

    s = build_report(results, out, labels=list(labels) or None, title=title, thumb_px=thumb_px, embed_limit=embed_limit,
                     page_size=int(page_size))
    click.echo(f"{s.path}: {s.rows} rows, {s.embedded_images} embedded images, plots: {', '.join(s.plots)}; "
               f"{s.bytes / 1e6:.1f} MB", err=True)
