"""A held-out OCR / document set rendered with known text, and the scores measured on it.

Nothing here comes from the shared images: every sample is drawn from a seeded generator, so the set is the
same on every machine (fonts permitting: the DejaVu, Liberation and WenQuanYi families, ``fc-list``).

Kinds of sample (``samples()``), each with its ground-truth lines (text and box in the sample's pixels):

- ``page_en``/``page_zh``/``page_mixed``: A4 pages at 150 dpi in one or two columns, a heading and paragraphs,
  paragraphs set apart either by a blank line or by a first-line indent; several fonts and sizes.
- ``receipt``: a narrow monospace till receipt (items, prices, totals, a date).
- ``scene``: a few words on a coloured, noisy, slightly blurred background, dark on light or light on dark.
- ``rotated``: a short paragraph turned 180 degrees, or skewed by a few degrees.

Scores: ``cer`` (edit distance over characters, whitespace removed, divided by the reference's length) and
``wer`` (over whitespace-separated words: spaces kept). ``line_cer`` scores an OCR result against the lines
whatever the order the OCR pipeline lists them in: each recognised line goes to the ground-truth line its box
centre falls in (text nowhere counts as inserted), the pieces of one line are joined left to right.

    python benchmarks/heldout.py --out /tmp/heldout   # writes the images, truth.json and a few PDFs
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation2"),
             Path("/usr/share/fonts/truetype/liberation")]
LATIN_FONTS = ["DejaVuSerif.ttf", "DejaVuSans.ttf", "DejaVuSansCondensed.ttf", "LiberationSerif-Regular.ttf",
               "LiberationSans-Regular.ttf", "DejaVuSansMono.ttf"]
MONO_FONTS = ["DejaVuSansMono.ttf", "LiberationMono-Regular.ttf"]
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
PAGE = (1754, 1240)  # A4 at 150 dpi, h x w

WORDS = (
    "the of and to in is for on that with as by at from this are be or an it was which has have not will can "
    "our their new office report year data model market policy company results service team project system "
    "customer quarter growth revenue cost price board members meeting plan review analysis design product users "
    "city water energy school health research program support account network security budget staff travel "
    "parking building opens Monday Tuesday Friday March April June September during before after between "
    "about against within without through under above across increase reduce improve deliver prepare confirm "
    "request approve include measure compare publish expected annual monthly weekly local national public "
    "private important current previous several available additional significant detailed quickly carefully "
    "recently however therefore although because while further approximately information management "
    "development performance environment committee agreement statement community industry technology"
).split()
CAPITALISED = "London Paris Berlin Tokyo Chicago Madrid Sydney Oslo Toronto Vienna Alice Bob Maria Chen".split()
HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行"
    "学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外"
    "天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情"
    "者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角"
    "期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交"
    "受联认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米"
    "整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青"
)
EN_PUNCT = [",", ",", ".", ";", ":"]


@dataclass
class Line:
    text: str
    box: Tuple[int, int, int, int]  # x1, y1, x2, y2


@dataclass
class Sample:
    name: str
    kind: str
    lang: str  # en, zh, mixed
    image: np.ndarray  # BGR
    lines: List[Line]
    paragraphs: List[str] = field(default_factory=list)  # pages: heading first, in reading order
    angle: float = 0.0  # rotated: degrees the drawn text was turned by (180, or a few either way)

    def truth(self) -> Dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "lang": self.lang, "paragraphs": self.paragraphs,
                "lines": [{"text": l.text, "box": list(l.box)} for l in self.lines]}


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    if name == "cjk":
        return ImageFont.truetype(str(CJK_FONT), size)
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return ImageFont.truetype(str(folder / name), size)
    raise FileNotFoundError(f"font {name} not found in {FONT_DIRS} (apt-get install fonts-dejavu fonts-liberation2)")


def available_latin_fonts() -> List[str]:
    return [n for n in LATIN_FONTS if any((d / n).is_file() for d in FONT_DIRS)]


# ---------------------------------------------------------------- text

def english_sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = rng.choice(CAPITALISED)
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = str(rng.choice([rng.randint(2, 99), rng.randint(1990, 2030)]))
    if rng.random() < 0.2:
        words[rng.randrange(len(words))] = f"{rng.randint(1, 99)}.{rng.randint(0, 9)}%"
    for _ in range(rng.randint(0, 2)):
        i = rng.randrange(1, len(words))
        words[i - 1] = words[i - 1].rstrip(",") + ","
    words[0] = words[0][0].upper() + words[0][1:]
    return " ".join(words) + rng.choice([".", ".", ".", "?", ";"]).replace(";", ".")


def chinese_sentence(rng: random.Random) -> str:
    text = "".join(rng.choice(HANZI) for _ in range(rng.randint(10, 26)))
    cut = rng.randrange(4, len(text) - 3)
    return text[:cut] + "，" + text[cut:] + "。"


def mixed_sentence(rng: random.Random) -> str:
    text = chinese_sentence(rng)[:-1]
    cut = rng.randrange(2, len(text) - 2)
    english = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    return text[:cut] + " " + english.capitalize() + " " + text[cut:] + "。"


SENTENCE = {"en": english_sentence, "zh": chinese_sentence, "mixed": mixed_sentence}


def wrap(text: str, face: ImageFont.FreeTypeFont, width: int, lang: str) -> List[str]:
    """Greedy line breaking: at spaces for English, anywhere (but not before punctuation) for Chinese."""
    if lang == "en":
        lines, current = [], ""
        for word in text.split():
            trial = f"{current} {word}" if current else word
            if current and face.getlength(trial) > width:
                lines.append(current)
                current = word
            else:
                current = trial
        return lines + ([current] if current else [])
    lines, current = [], ""
    for ch in text:
        if current and face.getlength(current + ch) > width and ch not in "，。":
            lines.append(current.rstrip())
            current = ch.lstrip()
        else:
            current += ch
    return lines + ([current.rstrip()] if current.strip() else [])


def draw_line(draw: ImageDraw.ImageDraw, xy: Tuple[int, int], text: str, face, fill) -> Line:
    draw.text(xy, text, font=face, fill=fill)
    x1, y1, x2, y2 = draw.textbbox(xy, text, font=face)
    return Line(text, (int(x1), int(y1), int(x2), int(y2)))


# ---------------------------------------------------------------- samples

def page(rng: random.Random, name: str, lang: str, columns: int, style: str, font_name: str, size: int,
         paragraphs: int) -> Sample:
    """A page; ``style``: "spaced" (a blank line between paragraphs) or "indented" (first-line indent, no gap)."""
    h, w = PAGE
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    face = font("cjk" if lang != "en" else font_name, size)
    head_face = font("cjk" if lang != "en" else font_name, int(size * 1.6))
    margin, gutter = 110, 60
    col_w = (w - 2 * margin - gutter * (columns - 1)) // columns
    lines: List[Line] = []
    heading = " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randint(3, 6))) if lang == "en" else \
        "".join(rng.choice(HANZI) for _ in range(rng.randint(6, 12)))
    lines.append(draw_line(draw, (margin, margin), heading, head_face, "black"))
    top = lines[-1].box[3] + int(size * 1.5)
    leading = int(size * rng.choice([1.3, 1.45, 1.6]))
    indent = size * 2 if style == "indented" else 0
    texts = []
    col, y = 0, top
    for _ in range(paragraphs):
        text = " ".join(SENTENCE[lang](rng) for _ in range(rng.randint(2, 4))) if lang == "en" else \
            "".join(SENTENCE[lang](rng) for _ in range(rng.randint(2, 4)))
        first = wrap(text, face, col_w - indent, lang)[:1]
        rest_text = text[len(first[0]):].strip() if first else ""
        rows = first + wrap(rest_text, face, col_w, lang) if rest_text else first
        needed = len(rows) * leading
        if y + needed > h - margin:
            if col + 1 >= columns:
                break
            col, y = col + 1, top
            if y + needed > h - margin:
                break
        x0 = margin + col * (col_w + gutter)
        for i, row in enumerate(rows):
            lines.append(draw_line(draw, (x0 + (indent if i == 0 else 0), y), row, face, "black"))
            y += leading
        texts.append(" ".join(rows) if lang == "en" else "".join(rows))
        y += leading if style == "spaced" else 0
    return Sample(name, "page_" + lang, lang, np.asarray(image)[:, :, ::-1].copy(), lines, [heading, *texts])


def receipt(rng: random.Random, name: str) -> Sample:
    size = rng.choice([20, 22, 26])
    face = font(rng.choice([f for f in MONO_FONTS if any((d / f).is_file() for d in FONT_DIRS)]), size)
    items = rng.sample(["Coffee", "Bagel", "Orange juice", "Sandwich", "Water 0.5L", "Salad bowl", "Tea", "Muffin",
                        "Soup of the day", "Croissant", "Yogurt", "Apple"], rng.randint(4, 8))
    rows = [rng.choice(["CORNER CAFE", "MARKET HALL", "CITY BAKERY"]),
            f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/2026 {rng.randint(7, 20):02d}:{rng.randint(0, 59):02d}"]
    total = 0.0
    for item in items:
        price = rng.randint(100, 1500) / 100
        total += price
        rows.append(f"{item:<18}{price:>7.2f}")
    rows += [f"{'TOTAL':<18}{total:>7.2f}", f"Card **** {rng.randint(1000, 9999)}", "Thank you!"]
    width, leading = int(face.getlength("M" * 27)) + 60, int(size * 1.5)
    image = Image.new("RGB", (width, leading * len(rows) + 60), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    lines = [draw_line(draw, (30, 30 + i * leading), row, face, (30, 30, 30)) for i, row in enumerate(rows)]
    array = np.asarray(image)[:, :, ::-1].copy()
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 6, array.shape)
    return Sample(name, "receipt", "en", np.clip(array + noise, 0, 255).astype(np.uint8), lines)


def scene(rng: random.Random, name: str) -> Sample:
    dark_text = rng.random() < 0.5
    bg = [rng.randint(170, 255) for _ in range(3)] if dark_text else [rng.randint(0, 90) for _ in range(3)]
    fg = tuple(rng.randint(0, 60) for _ in range(3)) if dark_text else tuple(rng.randint(200, 255) for _ in range(3))
    w, h = rng.randint(500, 900), rng.randint(250, 450)
    gradient = np.linspace(0.75, 1.1, w)[None, :, None] * np.array(bg)[None, None, :]
    image = Image.fromarray(np.clip(np.repeat(gradient, h, axis=0), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    texts = [" ".join(rng.choice(WORDS).upper() if rng.random() < 0.5 else rng.choice(WORDS).capitalize()
                      for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
    lines, y = [], rng.randint(20, 60)
    for text in texts:
        face = font(rng.choice(available_latin_fonts()), rng.randint(30, 56))
        while face.getlength(text) > w - 40:
            face = face.font_variant(size=face.size - 4)
        x = rng.randint(20, max(21, int(w - 20 - face.getlength(text))))
        lines.append(draw_line(draw, (x, y), text, face, fg))
        y = lines[-1].box[3] + rng.randint(15, 40)
        if y > h - 60:
            break
    array = np.asarray(image)[:, :, ::-1].astype(np.float64)
    array += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 10, array.shape)
    array = cv2.GaussianBlur(np.clip(array, 0, 255).astype(np.uint8), (3, 3), 0.8)
    return Sample(name, "scene", "en", array, lines)


def rotated(rng: random.Random, name: str) -> Sample:
    face = font(rng.choice(available_latin_fonts()), rng.choice([24, 28, 32]))
    w, h = 900, 420
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    rows = wrap(" ".join(english_sentence(rng) for _ in range(3)), face, w - 100, "en")[:6]
    lines = [draw_line(draw, (50, 40 + i * int(face.size * 1.5)), row, face, "black") for i, row in enumerate(rows)]
    array = np.asarray(image)[:, :, ::-1].copy()
    angle = rng.choice([180.0, rng.uniform(-4, 4)])
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    array = cv2.warpAffine(array, matrix, (w, h), borderValue=(255, 255, 255), flags=cv2.INTER_CUBIC)
    for line in lines:
        x1, y1, x2, y2 = line.box
        corners = np.array([[x1, y1, 1], [x2, y1, 1], [x2, y2, 1], [x1, y2, 1]], np.float64) @ matrix.T
        line.box = (int(corners[:, 0].min()), int(corners[:, 1].min()), int(corners[:, 0].max()), int(corners[:, 1].max()))
    return Sample(name, "rotated", "en", array, lines, angle=angle)


def page_specs() -> List[Dict[str, Any]]:
    """The pages of the set: every Latin font in both paragraph styles, one and two columns, and Chinese/mixed."""
    specs = []
    for i, face in enumerate(available_latin_fonts()):
        for style in ("spaced", "indented"):
            specs.append(dict(lang="en", columns=2 if (i + (style == "indented")) % 3 == 0 else 1, style=style,
                              font_name=face, size=22 + 2 * (i % 3), paragraphs=12))
    specs += [dict(lang="zh", columns=1, style="indented", font_name="cjk", size=24, paragraphs=8),
              dict(lang="zh", columns=2, style="spaced", font_name="cjk", size=22, paragraphs=10),
              dict(lang="mixed", columns=1, style="spaced", font_name="cjk", size=24, paragraphs=8)]
    return specs


def samples(seed: int = 2026, receipts: int = 6, scenes: int = 10, rotations: int = 8) -> List[Sample]:
    rng = random.Random(seed)
    out = [page(rng, f"page_{i:02d}_{s['lang']}", **s) for i, s in enumerate(page_specs())]
    out += [receipt(rng, f"receipt_{i:02d}") for i in range(receipts)]
    out += [scene(rng, f"scene_{i:02d}") for i in range(scenes)]
    out += [rotated(rng, f"rotated_{i:02d}") for i in range(rotations)]
    return out


def write_pdf(path: Path, pages: Sequence[np.ndarray]) -> Path:
    """Pages at 144 dpi, so PDFium's 2x rendering (iter_inputs) gives back their pixel size."""
    images = [Image.fromarray(p[:, :, ::-1]) for p in pages]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=144.0)
    return path


# ---------------------------------------------------------------- scores

def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Edit distance (Hyyrö's bit-parallel form of Myers' algorithm, Python ints as bit vectors)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    peq: Dict[Any, int] = {}
    for i, item in enumerate(a):
        peq[item] = peq.get(item, 0) | (1 << i)
    full, high = (1 << len(a)) - 1, 1 << (len(a) - 1)
    pv, mv, score = full, 0, len(a)
    for item in b:
        eq = peq.get(item, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & full) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def squash(text: str) -> str:
    return "".join(text.split())


def cer(reference: str, hypothesis: str) -> float:
    ref = squash(reference)
    return levenshtein(ref, squash(hypothesis)) / max(1, len(ref))


def wer(reference: str, hypothesis: str) -> float:
    ref = reference.split()
    return levenshtein(ref, hypothesis.split()) / max(1, len(ref))


def match_lines(lines: Sequence[Dict[str, Any]], texts: Sequence[str], boxes: Iterable[Sequence[float]]) -> Tuple[List[List[str]], List[str]]:
    """OCR lines (``texts`` with ``boxes`` x1 y1 x2 y2) to the truth ``lines`` their box centre falls in (the one
    whose centre line is nearest where boxes overlap, as a skewed sample's do): the texts on each truth line, left
    to right, and the texts on none."""
    pieces: List[List[Tuple[float, str]]] = [[] for _ in lines]
    stray: List[str] = []
    for text, (x1, y1, x2, y2) in zip(texts, boxes):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        holding = [(abs(cy - (line["box"][1] + line["box"][3]) / 2), i) for i, line in enumerate(lines)
                   if line["box"][0] - 4 <= cx <= line["box"][2] + 4 and line["box"][1] - 4 <= cy <= line["box"][3] + 4]
        if holding:
            pieces[min(holding)[1]].append((x1, text))
        else:
            stray.append(text)
    return [[t for _, t in sorted(got)] for got in pieces], stray


def line_errors(lines: Sequence[Dict[str, Any]], texts: Sequence[str], boxes: Iterable[Sequence[float]]) -> Tuple[int, int]:
    """(character errors, reference characters) of OCR lines against the truth ``lines``, whitespace removed,
    order-free (see the module docstring)."""
    pieces, stray = match_lines(lines, texts, boxes)
    errors = len(squash("".join(stray))) + sum(levenshtein(squash(line["text"]), squash("".join(got)))
                                               for line, got in zip(lines, pieces))
    return errors, sum(len(squash(line["text"])) for line in lines)


def word_errors(lines: Sequence[Dict[str, Any]], texts: Sequence[str], boxes: Iterable[Sequence[float]]) -> Tuple[int, int]:
    """(word errors, reference words), spaces kept: a truth line's pieces joined by a space."""
    pieces, stray = match_lines(lines, texts, boxes)
    errors = len(" ".join(stray).split()) + sum(levenshtein(line["text"].split(), " ".join(got).split())
                                                for line, got in zip(lines, pieces))
    return errors, sum(len(line["text"].split()) for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    truth = []
    for sample in samples():
        cv2.imwrite(str(args.out / f"{sample.name}.png"), sample.image)
        truth.append(sample.truth())
    (args.out / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{len(truth)} samples in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
