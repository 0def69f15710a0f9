"""Writers for each real source's native files: mp4, JPEG frame folders, CSV, xlsx, JSON.

What goes in them (columns, file names) is each source kind's plugin's (vlalert/sources/<kind>.py),
read by the demo (vlalert.sources.synthetic); these writers only know the file formats.

Every writer is deterministic: the same rows and frames give the same bytes, so a demo built
twice from one seed is byte-identical (and Snakemake's checksums and the tests can rely on it).
That is why the xlsx is re-zipped with fixed timestamps and why x264 runs single-threaded
without its macroblock tree.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

_FIXED_DT = datetime(2020, 1, 1, 0, 0, 0)


def cell(value: Any) -> str:
    """CSV cell text: empty for None, shortest round-tripping form for floats (7.4, not 7.4000001)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([cell(row.get(c)) for c in columns])


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent) + "\n", encoding="utf-8")


def write_xlsx_table(
    path: Path,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    legend: Sequence[Sequence[Any]],
    sheet_names: tuple[str, str] = ("readme", "annotations"),
) -> None:
    """An xlsx whose FIRST sheet is a legend and whose SECOND sheet holds the table (DADA-2000's layout)."""
    from openpyxl import Workbook

    wb = Workbook()
    first = wb.active
    first.title = sheet_names[0]
    for line in legend:
        first.append(list(line))
    table = wb.create_sheet(sheet_names[1])
    table.append(list(columns))
    for row in rows:
        table.append([row.get(c) for c in columns])
    wb.properties.creator = "vlalert synthetic demo"
    wb.properties.created = _FIXED_DT
    wb.properties.modified = _FIXED_DT
    buf = io.BytesIO()
    wb.save(buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_deterministic_zip(buf.getvalue()))


def _deterministic_zip(data: bytes) -> bytes:
    """Re-zip with fixed entry timestamps and fixed document dates (openpyxl stamps 'now')."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    stamp = _FIXED_DT.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            payload = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                text = payload.decode("utf-8")
                text = re.sub(
                    r"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)",
                    lambda m: m.group(1) + stamp + m.group(3),
                    text,
                )
                payload = text.encode("utf-8")
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, payload)
    return out.getvalue()


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float, width: int, height: int) -> int:
    """H.264 (libx264, yuv420p) mp4 at exactly `fps`; returns the number of frames written."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)  # exact for 10, 20, 30 and 29.97 fps
    n = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        # mbtree off: x264's macroblock-tree lookahead reads uninitialised memory on these small
        # frames, which made the bytes differ between runs (found with MALLOC_PERTURB_).
        options = {"preset": "veryfast", "crf": "20", "threads": "1", "x264-params": "mbtree=0"}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for arr in frames:
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame = rgb.reformat(format="yuv420p")
            frame.pts, frame.time_base = n, stream.codec_context.time_base  # x264's rate control reads pts
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
        for packet in stream.encode():
            container.mux(packet)
    return n


def write_jpeg_frames(
    folder: Path, frames: Iterable[np.ndarray], pattern: str, start: int, quality: int = 90
) -> list[Path]:
    """A frame folder: frame k goes to `folder / pattern.format(start + k)`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, arr in enumerate(frames):
        p = folder / pattern.format(start + k)
        Image.fromarray(arr).save(p, format="JPEG", quality=quality)
        paths.append(p)
    return paths


def truncate_file(path: Path, keep_fraction: float) -> None:
    """Cut a file short (an interrupted download): an mp4 loses its trailing moov atom and won't open."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
