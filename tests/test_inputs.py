"""iter_inputs / count_inputs on real files, real PDFs and a real local HTTP server (no mocks)."""

from __future__ import annotations

import http.server
import io
import os
import re
import shutil
import types
from pathlib import Path
from typing import Iterator, List, Sequence

import numpy as np
import pytest
from PIL import Image

from hpinfer.errors import ConfigError, InputError
from hpinfer.io import InputItem, count_inputs, iter_inputs
from hpinfer.io.inputs import parse_page_range
from test_serving_support import static_files

PDF_SOURCES = ["single_line.jpg", "tiny.png", "wide_line.jpg"]


def make_pdf(images: Sequence[Image.Image], path: Path = None) -> bytes:
    """Pillow writes one page per image at 72 dpi, so a page is as many points as the image has pixels."""
    buffer = io.BytesIO()
    first, *rest = [image.convert("RGB") for image in images]
    first.save(buffer, "PDF", save_all=True, append_images=rest)
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def minimal_pdf(kids: bytes = b"[3 0 R]", count: int = 1, encrypted: bool = False) -> bytes:
    """A hand-written PDF with a correct xref, for structures Pillow cannot produce."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids %s /Count %d >>" % (kids, count),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
    ]
    trailer = b""
    if encrypted:  # a Standard security handler whose /U does not match the empty user password
        objects.append(b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (b"ab" * 32, b"cd" * 32))
        trailer = b"/Encrypt 4 0 R /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>]"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


def pages(items: List[InputItem]) -> List[int]:
    return [item.page_index for item in items]


@pytest.fixture(scope="module")
def three_page_pdf(shared_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pdf") / "three.pdf"
    images = [Image.open(shared_images / name) for name in PDF_SOURCES]
    make_pdf(images, path)
    for image in images:
        image.close()
    return path


# --- images -----------------------------------------------------------------------------------------


def test_every_shared_image_decodes_to_bgr(shared_images: Path) -> None:
    paths = sorted(shared_images.iterdir())
    assert paths
    for path in paths:
        (item,) = list(iter_inputs(path))
        with Image.open(path) as image:
            width, height = image.size
        assert item.image.dtype == np.uint8 and item.image.flags["C_CONTIGUOUS"]
        assert item.image.shape[2] == 3 and item.input_path == str(path) and item.page_index is None
        assert {item.image.shape[:2], item.image.shape[1::-1]} >= {(height, width)}


def test_exif_orientation_is_applied(shared_images: Path) -> None:
    path = shared_images / "exif_rotated.jpg"
    (item,) = list(iter_inputs(str(path)))
    with Image.open(path) as image:
        plain = np.asarray(image.convert("RGB"))[:, :, ::-1]  # no exif_transpose
    assert item.image.shape == (306, 752, 3)  # 180 degrees keeps the shape...
    assert not np.array_equal(item.image, plain)  # ...but not the pixels
    assert np.array_equal(item.image, plain[::-1, ::-1])


def test_bilevel_png(shared_images: Path) -> None:
    with Image.open(shared_images / "bilevel_test.png") as image:
        assert image.mode == "1"
    (item,) = list(iter_inputs(shared_images / "bilevel_test.png"))
    assert item.image.shape == (566, 800, 3)
    assert set(np.unique(item.image)) <= {0, 255}


def test_arrays_and_pil_images() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    bgra = np.zeros((2, 2, 4), np.uint8)  # fully transparent -> white
    items = list(iter_inputs([gray, bgra, Image.new("RGB", (5, 4), (255, 0, 0))]))
    assert [item.image.shape for item in items] == [(3, 4, 3), (2, 2, 3), (4, 5, 3)]
    assert np.array_equal(items[0].image[:, :, 1], gray)
    assert (items[1].image == 255).all()
    assert items[2].image[0, 0].tolist() == [0, 0, 255]  # red in BGR
    assert all(item.input_path is None and item.page_index is None for item in items)
    assert count_inputs([gray, bgra]) == 2


def test_bytes_input(shared_images: Path, three_page_pdf: Path) -> None:
    image_bytes = (shared_images / "tiny.png").read_bytes()
    items = list(iter_inputs([image_bytes, three_page_pdf.read_bytes()], page_range=(2, 3)))
    assert [(item.input_path, item.page_index) for item in items] == [(None, None), (None, 1), (None, 2)]
    assert items[0].image.shape == (11, 65, 3)
    assert count_inputs([image_bytes, three_page_pdf.read_bytes()]) == 4


# --- directories ------------------------------------------------------------------------------------


def test_directory_sorted_and_filtered(shared_images: Path, tmp_path: Path) -> None:
    for target, source in [("b.png", "tiny.png"), ("a.JPG", "single_line.jpg"), ("c.jpeg", "single_line.jpg")]:
        shutil.copy(shared_images / source, tmp_path / target)
    make_pdf([Image.new("RGB", (20, 10))] * 2, tmp_path / "d.pdf")
    (tmp_path / "notes.txt").write_text("skip me")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    shutil.copy(shared_images / "tiny.png", tmp_path / "sub" / "nested.png")

    items = list(iter_inputs(tmp_path))
    names = [os.path.basename(item.input_path) for item in items]
    assert names == ["a.JPG", "b.png", "c.jpeg", "d.pdf", "d.pdf"]
    assert pages(items) == [None, None, None, 0, 1]
    assert items[0].input_path == os.path.join(str(tmp_path), "a.JPG")
    assert count_inputs(tmp_path) == 5


def test_shared_directory(shared_images: Path) -> None:
    items = list(iter_inputs(shared_images))
    assert [item.input_path for item in items] == sorted(str(path) for path in shared_images.iterdir())
    assert count_inputs(str(shared_images)) == len(items) == 10


# --- PDFs -------------------------------------------------------------------------------------------


def test_pdf_pages_and_page_range(three_page_pdf: Path) -> None:
    items = list(iter_inputs(three_page_pdf, pdf_scale=1.0))
    assert pages(items) == [0, 1, 2]
    assert all(item.input_path == str(three_page_pdf) for item in items)
    assert [item.image.shape[:2] for item in items] == [(39, 445), (11, 65), (54, 1167)]
    assert all(item.image.flags["C_CONTIGUOUS"] and item.image.dtype == np.uint8 for item in items)
    assert pages(list(iter_inputs(three_page_pdf, page_range=(2, 3)))) == [1, 2]
    assert pages(list(iter_inputs(three_page_pdf, page_range=(3, 99)))) == [2]  # last is clamped
    assert count_inputs(three_page_pdf) == 3
    assert count_inputs(three_page_pdf, page_range=(2, 3)) == 2
    assert count_inputs([three_page_pdf, three_page_pdf], page_range=(3, 99)) == 2
    with pytest.raises(InputError, match=r"three\.pdf.*beyond the last page \(3\)"):
        list(iter_inputs(three_page_pdf, page_range=(4, 5)))
    with pytest.raises(InputError, match="three.pdf"):
        count_inputs(three_page_pdf, page_range=(4, 4))


def test_pdf_scale_and_channel_order() -> None:
    data = make_pdf([Image.new("RGB", (40, 30), (255, 0, 0))])
    (item,) = list(iter_inputs(data, pdf_scale=2.0))
    assert item.image.shape == (60, 80, 3)
    assert np.abs(item.image[30, 40].astype(int) - [0, 0, 255]).max() <= 2  # red in BGR


def test_parse_page_range() -> None:
    assert parse_page_range("3") == (3, 3)
    assert parse_page_range("2-5") == (2, 5)
    assert parse_page_range(" 2 - 5 ") == (2, 5)
    for bad in ["", "a", "2-", "-3", "0", "5-2", "1-2-3", "1.5"]:
        with pytest.raises(ConfigError, match="page_range"):
            parse_page_range(bad)


def test_bad_options_fail_at_call_time(three_page_pdf: Path) -> None:
    for page_range in [(0, 2), (3, 2), (1,), "2-5"]:
        with pytest.raises(ConfigError, match="page_range"):
            iter_inputs(three_page_pdf, page_range=page_range)
    with pytest.raises(ConfigError, match="pdf_scale"):
        iter_inputs(three_page_pdf, pdf_scale=0)


def _open_fds_to(path: Path) -> int:
    fd_dir = Path("/proc/self/fd")
    return sum(1 for fd in fd_dir.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_streaming_renders_lazily_and_closes_early(tmp_path: Path) -> None:
    # Page 0 fits max_pixels, the 29 others do not: getting page 0 proves nothing later was rendered.
    path = tmp_path / "thirty.pdf"
    make_pdf([Image.new("RGB", (20, 20))] + [Image.new("RGB", (200, 200))] * 29, path)
    assert count_inputs(path) == 30

    stream = iter_inputs(path, pdf_scale=1.0, max_pixels=1000)
    assert isinstance(stream, types.GeneratorType)
    assert pages([next(stream)]) == [0]
    with pytest.raises(InputError, match=r"thirty\.pdf: page 2 renders to 200x200 pixels"):
        next(stream)

    stream = iter_inputs(path, pdf_scale=1.0)
    assert next(stream).page_index == 0
    if Path("/proc/self/fd").is_dir():
        assert _open_fds_to(path) == 1  # the document stays open between pages...
        stream.close()
        assert _open_fds_to(path) == 0  # ...and closing the generator early closes it
    else:
        stream.close()


# --- URLs -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_root(shared_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("www")
    shutil.copy(shared_images / "tiny.png", root / "tiny.png")
    make_pdf([Image.new("RGB", (20, 10))] * 2, root / "doc.pdf")
    (root / "noext").write_bytes(make_pdf([Image.new("RGB", (20, 10))]))  # sniffed, not named, as PDF
    with static_files(root) as url:
        yield url


def test_url_inputs(http_root: str) -> None:
    urls = [f"{http_root}/tiny.png", f"{http_root}/doc.pdf", f"{http_root}/noext"]
    items = list(iter_inputs(urls))
    assert [(item.input_path, item.page_index) for item in items] == [
        (urls[0], None), (urls[1], 0), (urls[1], 1), (urls[2], 0),
    ]
    assert items[0].image.shape == (11, 65, 3)
    assert count_inputs(urls) is None


def test_url_errors(http_root: str, tmp_path: Path) -> None:
    missing = f"{http_root}/missing.png"
    with pytest.raises(InputError, match=rf"^{re.escape(missing)}: download failed \(HTTP 404"):
        list(iter_inputs(missing))
    with pytest.raises(InputError, match=r"tiny\.png: download is \d+ bytes, above the limit of 100"):
        list(iter_inputs(f"{http_root}/tiny.png", max_download_bytes=100))
    with pytest.raises(InputError, match="only http:// and https://"):
        list(iter_inputs("ftp://example.com/a.png"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    closed = f"http://127.0.0.1:{server.server_address[1]}/a.png"
    server.server_close()  # nothing listens there any more
    with pytest.raises(InputError, match=rf"^{re.escape(closed)}: download failed"):
        list(iter_inputs(closed, url_timeout=5))


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("image.txt", b"hello", r"unsupported file type '\.txt' \(supported: jpg, jpeg, png, bmp, tif, tiff, webp, pdf\)"),
        ("empty.png", b"", "file is empty"),
        ("corrupt.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", r"corrupt or truncated image"),
        ("random.png", bytes(range(256)), "not a supported image"),
        ("corrupt.pdf", b"%PDF-1.4 garbage", "corrupt, empty or unreadable PDF"),
        ("locked.pdf", minimal_pdf(encrypted=True), r"PDF is encrypted \(password-protected\)"),
        # PDFium refuses zero-page PDFs without setting its error code, so the reason may be stale.
        ("blank.pdf", minimal_pdf(kids=b"[]", count=0), ".*PDF"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: {message}"):
        list(iter_inputs(path))


def test_minimal_pdf_helper_is_valid() -> None:
    (item,) = list(iter_inputs(minimal_pdf(), pdf_scale=1.0))
    assert item.image.shape == (100, 100, 3) and (item.image == 255).all()


def test_other_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(str(tmp_path / 'nope.png'))}: does not exist$"):
        list(iter_inputs(tmp_path / "nope.png"))
    with pytest.raises(InputError, match=f"^{re.escape(str(tmp_path))}: directory contains no supported files \\(jpg, "):
        count_inputs(tmp_path)
    with pytest.raises(InputError, match=r"^input 1: unsupported input type dict \(accepted: str or pathlib\.Path"):
        list(iter_inputs([np.zeros((2, 2)), {"a": 1}]))
    with pytest.raises(InputError, match=r"^input \(bytes\): file is empty"):
        list(iter_inputs(b""))
    with pytest.raises(InputError, match=r"^input 0 \(ndarray\): unsupported array shape"):
        list(iter_inputs([np.zeros((2, 2, 5), np.uint8)]))
    with pytest.raises(InputError, match=r"^input \(bytes\): corrupt, empty or unreadable PDF"):
        count_inputs(b"%PDF-1.7 truncated")
    with pytest.raises(InputError, match="no inputs given"):
        list(iter_inputs([]))


def test_decompression_bomb_guard(shared_images: Path, three_page_pdf: Path) -> None:
    with pytest.raises(InputError, match=r"doc_page_zh_en\.jpg: image is 621x877 pixels, above the limit"):
        list(iter_inputs(shared_images / "doc_page_zh_en.jpg", max_pixels=1000))
    with pytest.raises(InputError, match=r"three\.pdf: page 1 renders to 890x78 pixels.*lower pdf_scale"):
        list(iter_inputs(three_page_pdf, max_pixels=1000))
