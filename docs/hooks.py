"""MkDocs hook (mkdocs.yml `hooks:`): pages that show files kept elsewhere in the repository.

A page line ``<!-- include: PATH [section=NAME] [shift=N] -->`` is replaced by the file at PATH
(relative to the repository root) when the site is built, so the site quotes the file instead of a
copy that drifts: the benchmark figures (``benchmarks/RESULTS.md``, written by ``make bench``),
``RELIABILITY.md``, ``CHANGELOG.md`` and the README's quick start (``section=quickstart``: the text
between ``<!-- quickstart:start -->`` and ``<!-- quickstart:end -->``). ``shift=N`` moves the
file's headings N levels down under the page's own title. Images the included file links to
relatively are added to the site next to where the file lives (``benchmarks/b1_....png``), and
the README's links into ``docs/`` become links between pages. The API reference's docstrings
lose the Sphinx role prefixes (``:class:``) that mkdocstrings does not read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+)(?P<options>(?: \w+=\S+)*) -->$", re.M)
IMAGE = re.compile(r"(!\[[^\]]*\]\()(?!https?://|/)([^)\s]+\.(?:png|svg|jpg))\)")
HEADING = re.compile(r"^(#{1,5}) ", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
# Sphinx cross-reference roles of the docstrings (``:class:`X` ``), which mkdocstrings leaves as text.
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):(?=<code>)")


def _section(text: str, name: str, path: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if match is None:
        raise PluginError(f"{path} has no section '{name}' (<!-- {name}:start --> ... <!-- {name}:end -->)")
    return match.group(1)


def _shift_headings(text: str, levels: int) -> str:
    """Headings down by ``levels``, leaving code blocks (shell comments start with '#') alone."""
    parts, last = [], 0
    for fence in FENCE.finditer(text):
        parts.append(HEADING.sub(lambda m: "#" * levels + m.group(0), text[last : fence.start()]))
        parts.append(fence.group(0))
        last = fence.end()
    parts.append(HEADING.sub(lambda m: "#" * levels + m.group(0), text[last:]))
    return "".join(parts)


def _included(path: str, options: dict[str, str]) -> str:
    source = ROOT / path
    if not source.is_file():
        raise PluginError(f"include: {path} does not exist")
    text = source.read_text()
    if "section" in options:
        text = _section(text, options["section"], path)
    folder = Path(path).parent.as_posix()
    if folder != ".":
        text = IMAGE.sub(lambda m: f"{m.group(1)}{folder}/{m.group(2)})", text)
    text = text.replace("](docs/", "](")
    return _shift_headings(text, int(options.get("shift", "0")))


def _images_of_includes(docs_dir: Path) -> set[str]:
    """Repository paths of the images that included files link to."""
    found = set()
    for page in docs_dir.rglob("*.md"):
        for match in INCLUDE.finditer(page.read_text()):
            path = match.group("path")
            folder = Path(path).parent
            if folder == Path("."):
                continue
            found.update((folder / m.group(2)).as_posix() for m in IMAGE.finditer((ROOT / path).read_text()))
    return found


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    for image in sorted(_images_of_includes(Path(config.docs_dir))):
        if files.get_file_from_path(image) is None:
            files.append(File.generated(config, image, abs_src_path=str(ROOT / image)))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        options = dict(option.split("=", 1) for option in match.group("options").split())
        return _included(match.group("path"), options)

    return INCLUDE.sub(replace, markdown)


def on_page_content(html: str, **_: Any) -> str:
    return SPHINX_ROLE.sub("", html)
