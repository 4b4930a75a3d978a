"""Document bytes: a real PDF (flow name + input data) of any size, produced in chunks.

The body is never built whole: a large document is a small PDF plus an unreferenced filler
stream object before the xref table, yielded as slices of one shared block, so a 1 GiB
download costs the server one chunk of memory.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

CHUNK_SIZE = 256 * 1024

_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "text/html": ".html",
    "text/plain": ".txt",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/json": ".json",
    "image/png": ".png",
    "image/jpeg": ".jpg",
}

# 64 printable bytes per line: the filler stays readable in a hex dump and never contains
# "endstream", so even a parser that ignores /Length finds the end of the object.
_FILLER_LINE = b"Smart Flows emulator filler: padding to the requested size ....\n"
assert len(_FILLER_LINE) == 64
_FILLER_BLOCK = _FILLER_LINE * (CHUNK_SIZE // len(_FILLER_LINE))


def extension_for(content_type: str | None) -> str:
    """File extension (with dot) for a content type, or "" when unknown or None.

    The provider's ``models.extension_for`` has this same contract; the emulator keeps its own
    copy (and its own table) on purpose: it imports nothing from the provider, so the two are
    independent readings of the wire format that catch each other's mistakes.
    """
    if not content_type:
        return ""
    mime = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ""


def _repeat(block: bytes, total: int) -> Iterator[bytes]:
    view = memoryview(block)
    while total > 0:
        n = min(total, len(view))
        yield bytes(view[:n]) if n < len(view) else block
        total -= n


def _pdf_text(text: str) -> bytes:
    # Helvetica with the standard encoding only covers Latin-1 safely; anything else is "?".
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    cleaned = cleaned.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return cleaned.encode("ascii")


def _wrap(lines: list[str], width: int = 90, limit: int = 42) -> list[str]:
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        while len(line) > width:
            out.append(line[:width])
            line = "    " + line[width:]
        out.append(line)
    if len(out) > limit:
        out = [*out[: limit - 1], "..."]
    return out


@dataclass
class PdfDocument:
    """A one-page PDF 1.4 with a Helvetica title and text lines, padded to ``size`` bytes.

    ``size`` below the natural size of the page is raised to it (see ``size`` after init).
    """

    title: str
    lines: list[str]
    requested_size: int | None = None

    def __post_init__(self) -> None:
        text = [
            b"BT",
            b"/F1 18 Tf",
            b"72 740 Td",
            b"(" + _pdf_text(self.title) + b") Tj",
            b"/F1 10 Tf",
            b"0 -28 Td",
        ]
        for line in _wrap(self.lines):
            text += [b"(" + _pdf_text(line) + b") Tj", b"0 -14 Td"]
        text.append(b"ET")
        stream = b"\n".join(text) + b"\n"
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
            b"<< /Title (" + _pdf_text(self.title) + b") /Producer (Smart Flows emulator) >>",
        ]
        prefix = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        self._offsets: list[int] = []
        for number, body in enumerate(objects, start=1):
            self._offsets.append(len(prefix))
            prefix += b"%d 0 obj\n" % number + body + b"\nendobj\n"
        self._prefix = bytes(prefix)
        self._extra = 0
        natural = len(self._prefix) + len(self._tail(len(self._prefix), with_filler=False))
        # A filler object costs ~60 bytes of syntax: below that, pad with blank lines instead.
        self._filler_len = 0
        self._gap_newlines = 0
        self._filler_head = b""
        want = self.requested_size or 0
        if want <= natural:
            self.size = natural
            return
        self.size = want
        with_filler = want - natural > 128
        xref_pos = self._solve_xref_pos(want, with_filler)
        gap = xref_pos - len(self._prefix)
        if not with_filler:
            self._gap_newlines = gap
            return
        obj_tail_len = len(b"\nendstream\nendobj\n")
        head = self._filler_obj_head(gap)
        length = gap - len(head) - obj_tail_len
        self._filler_head = self._filler_obj_head(length)
        self._filler_len = length
        # The /Length digits may be fewer than guessed: the difference becomes blank lines.
        self._gap_newlines = gap - len(self._filler_head) - length - obj_tail_len
        assert self._gap_newlines >= 0

    @staticmethod
    def _filler_obj_head(length: int) -> bytes:
        return b"7 0 obj\n<< /Length %d >>\nstream\n" % length

    def _tail(self, xref_pos: int, *, with_filler: bool) -> bytes:
        offsets = list(self._offsets)
        if with_filler:
            offsets.append(len(self._prefix))
        count = len(offsets) + 1
        rows = [b"xref\n", b"0 %d\n" % count, b"0000000000 65535 f \n"]
        rows += [b"%010d 00000 n \n" % off for off in offsets]
        rows.append(b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % count)
        # ``_extra`` is one blank line for the sizes where startxref's digit count flips.
        rows.append(b"startxref\n%d\n%s%%%%EOF\n" % (xref_pos, b"\n" * self._extra))
        return b"".join(rows)

    def _solve_xref_pos(self, size: int, with_filler: bool) -> int:
        const = len(self._tail(0, with_filler=with_filler)) - 1  # minus the one digit of "0"
        for digits in range(1, 20):
            pos = size - const - digits
            if len(str(pos)) == digits:
                return pos
        # The digit count of startxref flips exactly at this size: one byte less, plus a newline.
        pos = self._solve_xref_pos(size - 1, with_filler)
        self._extra = 1
        return pos

    def chunks(self) -> Iterator[bytes]:
        yield self._prefix
        if self._filler_len:
            yield self._filler_head
            yield from _repeat(_FILLER_BLOCK, self._filler_len)
            yield b"\nendstream\nendobj\n"
        if self._gap_newlines:
            yield b"\n" * self._gap_newlines
        xref_pos = len(self._prefix) + (
            len(self._filler_head) + self._filler_len + len(b"\nendstream\nendobj\n")
            if self._filler_len
            else 0
        )
        xref_pos += self._gap_newlines
        yield self._tail(xref_pos, with_filler=bool(self._filler_len))


@dataclass
class DocxDocument:
    """A minimal real .docx (zip) when no size is asked; deterministic filler bytes otherwise."""

    title: str
    lines: list[str]
    requested_size: int | None = None

    def __post_init__(self) -> None:
        self._small = b""
        if self.requested_size is None:
            self._small = _minimal_docx([self.title, *self.lines])
            self.size = len(self._small)
        else:
            self.size = self.requested_size

    def chunks(self) -> Iterator[bytes]:
        if self._small:
            yield self._small
        else:
            yield from _repeat(_FILLER_BLOCK, self.size)


@dataclass
class BytesDocument:
    """Any other content type: the text as UTF-8, or filler bytes of the requested size."""

    title: str
    lines: list[str]
    requested_size: int | None = None

    def __post_init__(self) -> None:
        self._small = ("\n".join([self.title, *self.lines]) + "\n").encode()
        self.size = len(self._small) if self.requested_size is None else self.requested_size

    def chunks(self) -> Iterator[bytes]:
        if self.requested_size is None:
            yield self._small
        else:
            yield from _repeat(_FILLER_BLOCK, self.size)


Document = PdfDocument | DocxDocument | BytesDocument


def make_document(content_type: str, title: str, lines: list[str], size: int | None) -> Document:
    ext = extension_for(content_type)
    if ext == ".pdf":
        return PdfDocument(title, lines, size)
    if ext == ".docx":
        return DocxDocument(title, lines, size)
    return BytesDocument(title, lines, size)


def sha256_of(doc: Document) -> str:
    digest = hashlib.sha256()
    for chunk in doc.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _minimal_docx(paragraphs: list[str]) -> bytes:
    body = "".join(
        f'<w:p><w:r><w:t xml:space="preserve">{_xml_escape(p)}</w:t></w:r></w:p>' for p in paragraphs
    )
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.wordprocessingml.document.main+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
        ),
        "word/document.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            f"<w:body>{body}</w:body></w:document>"
        ),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            # A fixed timestamp keeps the bytes (and so the sha256) deterministic.
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()
