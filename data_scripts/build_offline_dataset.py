"""Build an offline image-captioning dataset from pictures that ship in packages.

    python data_scripts/build_offline_dataset.py --out offline_data [--sources tuxpaint,openmoji]
                                                 [--seed 0] [--size 256] [--workers 2]

Sources (install them with ``bash data_scripts/install_offline_sources.sh``):

- ``tuxpaint``: Debian ``tuxpaint-stamps-default`` (GPL-2+). Each stamp ``NAME.png`` or
  ``NAME.svg`` has a ``NAME.txt`` whose first line is an English sentence ("A giraffe.").
- ``openmoji``: npm ``openmoji@17.0.0`` (CC BY-SA 4.0). Colour SVGs named by hexcode, with
  CLDR annotations ("dog face") in ``data/openmoji.json``.
- ``openclipart``: Debian ``openclipart-svg`` (public domain). SVGs whose Dublin Core
  metadata holds a title and sometimes a description.

Output (``OUT``): ``images/<source>/<name>.jpg`` (square RGB on white),
``rgba/<source>/<name>.png`` (the same square canvas with alpha, for compositing onto
backgrounds), ``dataset_offline.json`` in the Karpathy layout and ``manifest.json`` (counts,
licences, package versions, filters). Splits are grouped with a union-find so that an
object, its variants and every caption it shares with other images stay in one split.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from captioner.data.vocab import tokenize

SOURCES = ("tuxpaint", "openmoji", "openclipart")
INSTALL_SCRIPT = "data_scripts/install_offline_sources.sh"
DEFAULT_OPENMOJI = Path(__file__).resolve().parent.parent / "offline_data" / "sources" / "openmoji"
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}

class Package(NamedTuple):
    name: str
    install: str        # the command that installs it without the script
    licence: str        # as read in the package's copyright or licence file
    location: str       # where it is when dpkg cannot tell
    licence_file: str   # relative to the source folder for npm packages


PACKAGES = {
    "tuxpaint": Package("tuxpaint-stamps-default", "apt-get install tuxpaint-stamps-default",
                        "GPL-2.0-or-later", "/usr/share/tuxpaint/stamps",
                        "/usr/share/doc/tuxpaint-stamps-default/copyright"),
    "openmoji": Package("openmoji@17.0.0", "cd offline_data/sources/openmoji && npm pack openmoji@17.0.0 "
                        "&& tar xzf openmoji-17.0.0.tgz", "CC-BY-SA-4.0", str(DEFAULT_OPENMOJI),
                        "package/LICENSE.txt"),
    "openclipart": Package("openclipart-svg", "apt-get install openclipart-svg",
                           "public domain (Creative Commons Public Domain Dedication)",
                           "/usr/share/openclipart/svg", "/usr/share/doc/openclipart-svg/copyright"),
}


class SourceMissing(Exception):
    """A source package is not installed; the message says how to install it."""


@dataclass
class Item:
    """One picture and its usable descriptions, before rendering."""

    source: str
    name: str                      # output name without extension, unique within the source
    original: str                  # the source file
    kind: str                      # photo | drawing | emoji | clipart
    captions: list[str]
    links: list[str] = field(default_factory=list)   # extra grouping keys (variants, skin tones)


# ----------------------------------------------------------------------------------- captions

#: Words that mark a title as Italian, French, Spanish, Portuguese, German, Dutch or Polish,
#: collected from the real titles that pass every other filter. English homographs ("cane",
#: "villa", "sole", "disco", "ours", "legal") and single letters ("the letter e") are left out.
NON_ENGLISH = set("""
abeille abitazione acciaio armoiries asso bene bianchi campeggio carte cigni coniglio costruzione
decorazione demolizione eau gateau ionisantes islas neri olifant pansement pelo per sacco sapin secchio spugna stagioni
 acquila aglio albero amibe ampelfrau ampelmaennchen anatra anelli ape
appunti aquila aquivos arbre architetto arma arrotolata asse attaccapanni attenzione avec aviso
bambina bambino betoniera biberon bicicletta binocolo biologique bitte blokken blocco bobine borsa
borsetta bussola caffe calamita calcolatrice calzettoni camicia cammello campagna candela canguro
cani capitello carpentiere carretta carta cartella cartes casa casco cassa cavalletta cavallo
cesto cestino chiave chimico chimique cigno cinepresa ciuccio civetta civiere clessidra
coccinella coccinelle coccinellona colombo colori comburant condominio cornetto corridore
corrosif couronne cretina cronometro cubo cucina da dei del della delle dente di diagramma
digitale dinosauri dinosauro disquete donna dottore due echelle elefante elefantone engrenagem
esperimento estrela estrella eteindre extincteur extremement fabbrica facilement farfalla
farfalle fata fatina fattoria fernsehturm festoni figo finestra finestre fiocco fiore flamand
flamme foglie forbici formichina formicona formulario fotografica fugit fumer gabbiano gallina
gallo gatti gatto gattina gerenciador ghiaccio giallo giardinaggio giardino gmünd grattacieli
griglia grondaia grune guanti gufo herbaty humain il imbianchino incazzato incendie insetto
insieme interdite io istogramma kehrwoche keine ksiega kubek la lana le legno lente leone lettera
libellula libellule libro livella lourde lucchetto lucertola lucertolona lucertolone lumaca lutte
macchina mante mantide manutention mapa martellare mattone maultasche miasta microfono microscopio
modanatura modanature mondo montacarichi moschito mostriciattolo motivo moulure moulures mucca
mucche muito municipios negozio nocif noi nonno nuage nue numero obligatoire obligation orme
orso pacco paesaggio palloncini pallone papera para particulièrementglissante passo pasteque
pattinatrice pattino pecora pecorella pennello pennuto pentola peperoncino pera pesca pescetto
pesistica pezzata pietons pinguino pinzatrice piramide pittura plurifamigliare pollo poltrona
pomodori porcinet portafoglio posate premiers principessa produit profilati profilato profilo
proiettore provetta provette pudim pulsante punaisa punkt puntine quattro ragazza ragazzo
ragnetto ragno ramarro rana rauchen ravanello rayonnement recznik regalo religieuse religiosa
respiratoires ricette rigido rincage rios risque rollandin rondelle rosa rosso rotondo ruota
salvagente sapone sauvetage scala scatolone schermo schwäbisch scodella secours securite sedia
seduto sega serratura seta seus signore signorina simbol simbolo singolo siringa sortie
spätzlepresse spaventapasseri stambecco stampante stara stawisk stecchito stemma stetoscopio
stilizzata stilizzato struzzo subacqueo suivre tabella tacchino tasto tatuaggio tavola tavolo
tavolozza tazza teiera telecamera telecomando telefone televisore tenda teschio tigre topo toro
toros torta toucher toxique trabalhos tramezzino tramonto traslocatore trattore trebuchement tres
trois tueten uccello ufficio uma umano unita uovo usar utensile utensili utente utenti vacca
valdostana valdostano valigie vehicules verde vestito viti voies yeux zaino zanzara zucca
""".split())

PLACEHOLDERS = {"untitled", "unnamed", "no title", "new document", "drawing", "image", "picture",
                "layer", "layer 1", "svg", "clipart", "clip art", "icon", "icons", "test", "title"}
COLLECTION = re.compile(
    r"\b(collection|theme|icon ?set|iconset|webicons|clip ?art|cliparts|gradient|submission|sibmission"
    r"|inkscape|sodipodi|openclipart|abiclipart|rpg map elements|template|example|svg)\b")
#: Descriptions about the file or its author rather than the picture.
ABOUT_THE_FILE = re.compile(
    r"\b(derivative|derived|converted|traced|autotraced|edited from|based on|based in|enjoy it"
    r"|i drew|i use|my interpretation|originally|for printing|in progess|prototype|fanart|malformed)\b")
#: A caption describes what is shown. These say something else: a fact or a piece of history about
#: the thing ("a candy cane is a traditional christmas treat in the united states"), an opinion
#: ("a nice detailed image of clouds") or a word to the reader ("..., you can surprise the enemy",
#: "easily changed to be more specific"). The decoder learned such sentences word for word and
#: wrote them about photos it did not know.
TRIVIA = re.compile(
    r"\b(is|are|was|were|has been|have been) (a|an|the|one|used|made|known|called|found|native|traditional"
    r"|popular|often|usually|also|very|not|considered|believed|said)\b"
    r"|\b(traditional(ly)?|invented|centur(y|ies)|ancient|histor(y|ic|ical)|famous|legend(ary)?)\b"
    r"|\bin the (uk|us|usa|united states|united kingdom|world|middle ages)\b|\b(1[0-9]{3}|20[0-9]{2})s?\b"
    r"|\b(world war|atomic bomb|dropped on|in our solar system)\b")
OPINION = re.compile(r"\b(nice|beautiful|awesome|lovely|amazing|wonderful|gorgeous|favou?rite|cute|funny|best)\b")
TO_THE_READER = re.compile(
    r"\b(you|your|you're|you'll|please|click|feel free|easily|let's|let us|can be used|could be used"
    r"|to be more)\b")
#: A sentence that states something (a verb of being, having or meaning, or a speaker) rather than
#: naming what is shown: "holly leaves are shiny and have prickles", "this shell is hundreds of years
#: old", "hei stands for halb or half", "we remember those who have died". What is happening in the picture
#: stays a description ("a cat is sleeping on a mat").
STATEMENT = re.compile(
    r"\b(is|are|was|were)\b(?! \w+ing\b)|\b(it's|has|have|had|means|resembles|stands for|remember|hate|eats"
    r"|eaten|shows|seems?)\b"
    r"|^(he|she|they|we|i|nobody|everyone)\b")
NOT_A_DESCRIPTION = ((TRIVIA, "a fact or history, not a description"), (OPINION, "an opinion, not a description"),
                     (TO_THE_READER, "an instruction or a note to the reader"),
                     (STATEMENT, "a statement, not a description"))
FILE_NAME = re.compile(r"[_@#/\\]|\.(svg|png|jpe?g|gif|py)\b|hash\(0x")
HYPHENATED_TOKEN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+){2,}$|^[a-z]{2,}-[a-z]{2,}$")
NON_LATIN = re.compile(r"[^\u0000-\u024f\u1e00-\u1eff\u2000-\u206f]")
#: A caption is a short phrase. Longer descriptions keep their first clause when that is short enough
#: ("saturn, the second largest planet in our solar system, ..." -> "saturn"); the decoder copied
#: longer ones word for word about photos it did not know.
MAX_WORDS = 8


def normalise_caption(text: str) -> str:
    """One caption style: the first sentence, lower case, asides and trailing marks removed.

    ``"A huge dump truck."`` -> ``"a huge dump truck"``; ``"Cello (B and W)"`` -> ``"cello"``;
    ``"Venus—the second planet."`` -> ``"venus, the second planet"``; ``"Magnifying Glass 4"``
    -> ``"magnifying glass"`` (a trailing number numbers variants, it describes nothing); a
    caption of more than :data:`MAX_WORDS` words keeps its first clause (up to the first comma).
    """
    text = unicodedata.normalize("NFKC", html.unescape(text)).replace("’", "'").replace("‘", "'")
    text = re.sub(r"[“”\"`]", "", text)
    text = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(])", text.strip(), maxsplit=1)[0]
    text = re.sub(r"\s*[—–]\s*|\s+-\s+", ", ", text)
    text = re.sub(r"\s*[(\[][^)\]]*[)\]]", "", text)
    text = " ".join(text.lower().split())
    text = re.sub(r"^(this is|here is|it is)\s+", "", text)
    text = re.sub(r"\s+\d{1,2}$|(?<=[a-z]{3})\d{1,3}$", "", text)
    if len(text.split()) > MAX_WORDS:
        text = text.split(",")[0]
    return text.strip(" .!?,;:-*–…()")


def caption_problem(text: str, raw: str = "", strict: bool = False) -> str | None:
    """Why a normalised caption (made from ``raw``) is not a usable description, or None.

    ``strict`` adds the rules for free-text titles typed by many hands (Openclipart, OpenMoji's
    own extras): placeholders, set and tool names, notes about the file, very short or
    hyphen-joined names, and other languages. Tux Paint's and CLDR's captions are curated
    English, where those rules would only do harm ("ox", "yo-yo", "flag of sierra leone").
    """
    if not text:
        return "empty"
    if "\ufffd" in text or NON_LATIN.search(text):
        return "broken or non-Latin text"
    if not re.search(r"[a-z]", text):
        return "no letters (numbers or symbols only)"
    if re.search(r"https?:|www\.|\S+@\S+\.\S+|\.(com|org|net)\b", f"{text} {raw.lower()}"):
        return "url or e-mail"
    if FILE_NAME.search(text) or "hash(0x" in raw.lower():
        return "file-name-like"
    for pattern, reason in NOT_A_DESCRIPTION:
        if pattern.search(text):
            return reason
    if len(text.split()) > MAX_WORDS:
        return f"longer than {MAX_WORDS} words"
    if not strict:
        return None
    if text in PLACEHOLDERS:
        return "placeholder (untitled, drawing, ...)"
    if len(re.sub(r"[^a-z]", "", text)) < 3:
        return "fewer than 3 letters"
    if HYPHENATED_TOKEN.search(text):
        return "file-name-like"
    if COLLECTION.search(text):
        return "collection, theme or tool name"
    if ABOUT_THE_FILE.search(text):
        return "about the file, not the picture"
    if re.search(r"[^\x00-\x7f]", text):
        return "not English (accented letters)"
    if NON_ENGLISH.intersection(re.findall(r"[^\W\d_]+", text)):
        return "not English (word list)"
    return None


def usable_captions(texts, dropped: Counter, source: str, strict: bool = False) -> list[str]:
    """Normalise, filter and de-duplicate one picture's descriptions; count what is dropped."""
    kept: list[str] = []
    for raw in texts:
        caption = normalise_caption(raw)
        reason = caption_problem(caption, raw, strict)
        if reason:
            dropped[(source, reason)] += 1
        elif caption not in kept:
            kept.append(caption)
    return kept


# ------------------------------------------------------------------------------------ sources

def dpkg_folder(package: str, suffix: str, default: str) -> Path:
    """The folder of an installed Debian package that ends with ``suffix`` (from ``dpkg -L``)."""
    try:
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return Path(default)
    folders = [line for line in listing.splitlines() if line.endswith(suffix)]
    return Path(min(folders, key=len)) if folders else Path(default)


def package_version(source: str, root: Path) -> str:
    if source == "openmoji":
        return json.loads((root / "package" / "package.json").read_text())["version"]
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGES[source].name],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not installed with dpkg)"


def check_source(source: str, root: Path) -> None:
    """Raise :class:`SourceMissing` naming the package and how to install it."""
    probe = {"tuxpaint": root, "openmoji": root / "package" / "data" / "openmoji.json",
             "openclipart": root}[source]
    if probe.exists() and (probe.is_file() or any(probe.iterdir())):
        return
    package = PACKAGES[source]
    raise SourceMissing(
        f"source '{source}' is missing: package {package.name} is not installed (looked for {probe}). "
        f"Install it with `bash {INSTALL_SCRIPT}` (or: {package.install}), "
        f"or leave it out with --sources {','.join(s for s in SOURCES if s != source)}")


#: Suffixes that make variants of one stamp: frog-1, grave-b, A_outline / A_filled, bat_left, flower2.
TUX_VARIANT = re.compile(r"[-_](\d+|[a-z]|outline|filled|photo|mirror|left|right|in|out|open|closed)$|(?<=[a-z])\d+$")


def tuxpaint_kind(path: Path) -> str:
    """``photo`` or ``drawing``: SVGs are drawings; a PNG is a photo when it has no flat areas.

    Drawings (and renders of drawings) are made of regions of one exact colour, so many of
    their pixels equal both their right and lower neighbours; in photos almost none do. Tiny
    stamps (under 40 px) are icons. Measured on the real stamps the cut is clean except for a
    few smooth-shaded drawings (party hat, stocking) counted as photos.
    """
    if path.suffix == ".svg":
        return "drawing"
    try:
        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA")).astype(np.int16)
    except (OSError, ValueError):
        return "drawing"  # unreadable: reported and skipped when it is rendered
    if max(rgba.shape[:2]) < 40:
        return "drawing"
    opaque = rgba[..., 3] == 255
    inner = opaque[:-1, :-1] & opaque[1:, :-1] & opaque[:-1, 1:]
    colour = rgba[..., :3]
    flat = ((colour[:-1, :-1] == colour[:-1, 1:]).all(-1) & (colour[:-1, :-1] == colour[1:, :-1]).all(-1))
    n = int(inner.sum())
    return "photo" if n and (flat & inner).sum() / n < 0.06 else "drawing"


def find_tuxpaint(root: Path, dropped: Counter) -> list[Item]:
    """Stamps with a caption. ``NAME_mirror.png`` (a pre-mirrored copy) and stamps without a
    ``NAME.txt`` are skipped; when a stamp has both an SVG and a PNG, the SVG is used."""
    items = []
    for txt in sorted(root.rglob("*.txt")):
        images = [txt.with_suffix(ext) for ext in (".svg", ".png") if txt.with_suffix(ext).is_file()]
        if not images:
            dropped[("tuxpaint", "caption file without an image")] += 1
            continue
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        captions = usable_captions(lines[:1], dropped, "tuxpaint")
        if not captions:
            continue
        rel = txt.relative_to(root).with_suffix("")
        stem = rel.name.lower()
        for _ in range(2):
            stem = TUX_VARIANT.sub("", stem) or stem
        items.append(Item("tuxpaint", "__".join(rel.parts), str(images[0]), tuxpaint_kind(images[0]),
                          captions, [f"tuxpaint-stamp:{rel.parent}/{stem}"]))
    for image in root.rglob("*"):
        if image.suffix in (".png", ".svg") and not image.with_suffix(".txt").exists():
            reason = "pre-mirrored copy (NAME_mirror)" if image.stem.endswith("_mirror") else "image without a caption"
            dropped[("tuxpaint", reason)] += 1
    return items


#: OpenMoji subgroups whose pictures are text, logos, interface glyphs or names of a meaning.
OPENMOJI_SKIP = {"keycap": "letters, digits or text", "alphanum": "letters, digits or text",
                 "regional-indicator": "letters, digits or text", "skin-tone": "swatch or hair-style part",
                 "hair-style": "swatch or hair-style part", "brand": "brand logo",
                 "ui-element": "user-interface glyph", "queer-symbols": "flag named by its meaning"}


def find_openmoji(root: Path, dropped: Counter, skin_tones: bool = False) -> list[Item]:
    """Emojis with their CLDR annotation. Skin-tone variants are left out unless ``skin_tones``;
    kept or not, each is linked to its base emoji so the two never land in different splits."""
    items = []
    for emoji in json.loads((root / "package" / "data" / "openmoji.json").read_text(encoding="utf-8")):
        hexcode = emoji["hexcode"]
        if emoji.get("skintone") and not skin_tones:
            dropped[("openmoji", "skin-tone variant")] += 1
            continue
        if emoji["subgroups"] in OPENMOJI_SKIP:
            dropped[("openmoji", OPENMOJI_SKIP[emoji["subgroups"]])] += 1
            continue
        svg = root / "package" / "color" / "svg" / f"{hexcode}.svg"
        if not svg.is_file():
            dropped[("openmoji", "no colour SVG")] += 1
            continue
        annotation = emoji["annotation"]
        annotation = re.sub(r"^flag: (.+)$", r"flag of \1", annotation).replace(": ", ", ")
        captions = usable_captions([annotation], dropped, "openmoji", strict=emoji["group"] == "extras-openmoji")
        if captions:
            base = emoji.get("skintone_base_hexcode") or hexcode
            items.append(Item("openmoji", hexcode, str(svg), "emoji", captions, [f"emoji:{base}"]))
    return items


DC, CC = "{http://purl.org/dc/elements/1.1/}", "{http://web.resource.org/cc/}"
SHARED_TEXT_LIMIT = 12


def svg_metadata(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(titles, descriptions, creators) of the ``cc:Work`` in an SVG's RDF metadata."""
    titles, descriptions, creators = [], [], []
    for work in ET.parse(path).getroot().iter(f"{CC}Work"):
        for child in work:
            if child.tag == f"{DC}title":
                titles.append(child.text or "")
            elif child.tag == f"{DC}description":
                descriptions.append(child.text or "")
            elif child.tag == f"{DC}creator":
                creators += [(t.text or "").strip().lower() for t in child.iter(f"{DC}title")]
    return titles, descriptions, creators


def find_openclipart(root: Path, dropped: Counter) -> list[Item]:
    """Clip art titled (and sometimes described) in its metadata. Symbolic links are copies
    of other files and are skipped; so are texts shared by more than SHARED_TEXT_LIMIT files
    (set names such as "card" or "gramastar" on hundreds of different pictures), titles that
    are the author's name and flags titled with a place name only ("benin")."""
    found = []
    for path in sorted(root.rglob("*.svg")):
        if path.is_symlink():
            dropped[("openclipart", "symbolic link to another file")] += 1
            continue
        try:
            found.append((path, *svg_metadata(path)))
        except (ET.ParseError, OSError) as error:
            dropped[("openclipart", "unreadable SVG metadata")] += 1
            print(f"skipped {path}: {error}", file=sys.stderr)
    shared = Counter(" ".join(t.lower().split()) for _, titles, descriptions, _ in found
                     for t in titles[:1] + descriptions[:1])

    def problem(raw: str, path: Path, creators: list[str]) -> str | None:
        text = normalise_caption(raw)
        if text and shared[" ".join(raw.lower().split())] > SHARED_TEXT_LIMIT:
            return f"title or description shared by more than {SHARED_TEXT_LIMIT} files"
        if text and text in creators:
            return "author's name"
        if text and "flags" in path.parts and "flag" not in text:
            return "flag titled by its place name only"
        return None

    items = []
    for path, titles, descriptions, creators in found:
        texts = []
        for raw in titles[:1] + [d for d in descriptions[:1] if d.strip()]:
            reason = problem(raw, path, creators)
            if reason:
                dropped[("openclipart", reason)] += 1
            else:
                texts.append(raw)
        captions = usable_captions(texts, dropped, "openclipart", strict=True)
        rel = path.relative_to(root).with_suffix("")
        if not captions:
            dropped[("openclipart", "picture left without a caption")] += 1
            continue
        # One drawing filed twice or in variants: box_juliane_krug_r/_s, crawfish1_bw_ganson, *_01/_02.
        family = re.sub(r"(_bw|_\d+|\d+)+$", "", re.sub(r"_[a-z]?$", "", rel.name.lower()))
        items.append(Item("openclipart", "__".join(rel.parts), str(path), "clipart", captions,
                          [f"openclipart-file:{family}"]))
    return items


# ------------------------------------------------------------------------------------- images

def svg_source(path: Path) -> bytes:
    """The SVG's bytes with internal entities expanded. Adobe Illustrator writes namespaces as
    ``<!ENTITY ns_svg "http://...">``, and cairosvg's hardened parser refuses any entity."""
    data = path.read_bytes()
    if b"<!ENTITY" not in data:
        return data
    entities = dict(re.findall(rb'<!ENTITY\s+([\w.-]+)\s+"([^"]*)"\s*>', data))
    data = re.sub(rb"<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", b"", data, count=1, flags=re.S)
    return re.sub(rb"&([\w.-]+);", lambda m: entities.get(m.group(1), m.group(0)), data)


def render_svg(path: Path, size: int, max_pixels: int = 4096 * 4096) -> Image.Image:
    """Render an SVG so that its drawn content, not its page, is about twice ``size`` across.

    A first pass 128 px wide (512 if that comes out empty) finds where the drawing is on its
    page, since clip art often sits small on a large page; the second renders at the scale the
    drawing needs, with at most ``max_pixels`` for the whole page.
    """
    import cairosvg

    data = svg_source(path)

    def render(width: float) -> Image.Image:
        png = cairosvg.svg2png(bytestring=data, url=str(path), output_width=round(width))
        return Image.open(io.BytesIO(png)).convert("RGBA")

    for first in (128, 512):  # hairlines on a large page can vanish at 128 px
        page = render(first)
        box = page.getchannel("A").getbbox()
        if box is not None:
            break
    else:
        raise ValueError("renders as an empty (fully transparent) picture")
    scale = min(2 * size / max(box[2] - box[0], box[3] - box[1]),
                (max_pixels / (page.width * page.height)) ** 0.5)
    return render(first * scale) if scale > 1.05 else page


def square_canvas(rgba: Image.Image, size: int, margin: float = 0.05) -> Image.Image:
    """The visible part of ``rgba`` centred on a transparent ``size`` x ``size`` canvas, aspect
    ratio kept, with ``margin`` (a fraction of ``size``) free on every side."""
    box = rgba.getchannel("A").getbbox()
    if box is None:
        raise ValueError("fully transparent picture")
    rgba = rgba.crop(box)
    scale = size * (1 - 2 * margin) / max(rgba.size)
    width, height = (max(1, round(side * scale)) for side in rgba.size)
    rgba = rgba.resize((width, height), Image.Resampling.LANCZOS)  # premultiplied by Pillow
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(rgba, ((size - width) // 2, (size - height) // 2))
    return canvas


def render_item(job: tuple[str, str, str, int]) -> tuple[str, str | None]:
    """Worker: write the RGB JPEG and the RGBA PNG of one picture; return (original, error)."""
    original, rgb_path, rgba_path, size = job
    try:
        path = Path(original)
        if path.suffix == ".svg":
            rgba = render_svg(path, size)
        else:
            with Image.open(path) as image:
                image.load()
                rgba = image.convert("RGBA")
        canvas = square_canvas(rgba, size)
        white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
        for target in (rgb_path, rgba_path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
        Image.alpha_composite(white, canvas).convert("RGB").save(rgb_path, quality=95)
        canvas.save(rgba_path)
        return original, None
    except Exception as error:  # noqa: BLE001 - any broken file is reported and skipped
        return original, f"{type(error).__name__}: {error}".splitlines()[0]


def render_all(items: list[Item], out: Path, size: int, workers: int) -> dict[str, str]:
    """Render every item (in ``workers`` processes); return {original: reason} of failures."""
    jobs = [(item.original, str(out / "images" / item.source / f"{item.name}.jpg"),
             str(out / "rgba" / item.source / f"{item.name}.png"), size) for item in items]
    failures = {}
    with multiprocessing.Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.imap_unordered(render_item, jobs, chunksize=4) if pool else map(render_item, jobs)
        for original, error in tqdm(results, total=len(jobs), desc="rendering", unit="img"):
            if error:
                failures[original] = error
    return failures


# --------------------------------------------------------------------------- groups and splits

class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def group_items(items: list[Item]) -> list[str]:
    """A group id per item: items sharing a normalised caption or a link key (stamp variant,
    skin-tone base, file family) are in one group, transitively, across sources."""
    union = UnionFind(len(items))
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        for key in [f"caption:{c}" for c in item.captions] + item.links:
            union.union(index, first.setdefault(key, index))
    names: dict[int, str] = {}
    return [names.setdefault(union.find(i), f"g{len(names):05d}") for i in range(len(items))]


def assign_splits(items: list[Item], groups: list[str], seed: int) -> dict[str, str]:
    """{group: split}, about 80/10/10 of each source's images, whole groups at a time.

    Groups are taken in a seeded random order; each goes to the split furthest below its
    target share, measured per source so that every source is split about 80/10/10.
    """
    members: dict[str, Counter] = defaultdict(Counter)
    for item, group in zip(items, groups):
        members[group][item.source] += 1
    totals = Counter(item.source for item in items)
    filled = {split: Counter() for split in SPLITS}
    order = sorted(members)
    random.Random(seed).shuffle(order)
    chosen = {}
    for group in order:
        def deficit(split: str) -> float:
            return sum(n * (SPLITS[split] * totals[src] - filled[split][src]) / totals[src]
                       for src, n in members[group].items())
        chosen[group] = max(SPLITS, key=deficit)
        filled[chosen[group]].update(members[group])
    return chosen


# ------------------------------------------------------------------------------------- output

NOTICE = ("Built from installed packages under their own licences: Tux Paint stamps GPL-2.0-or-later, "
          "OpenMoji CC BY-SA 4.0 (attribution: OpenMoji, https://openmoji.org), Openclipart public "
          "domain. Do not commit or redistribute these images or files derived from them without "
          "honouring those licences (rebuild them with data_scripts/build_offline_dataset.py "
          "instead), and name the licences in the model card of any model trained on them.")


def write_json(path: Path, data) -> None:
    """Write JSON atomically: a temporary file in the same folder, then os.replace."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(temporary, path)


def karpathy_dataset(items: list[Item], groups: list[str], splits: dict[str, str]) -> dict:
    images, sentid = [], 0
    for imgid, (item, group) in enumerate(zip(items, groups)):
        sentences = []
        for caption in item.captions:
            sentences.append({"raw": caption, "tokens": tokenize(caption), "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({
            "imgid": imgid, "filepath": item.source, "filename": f"{item.name}.jpg",
            "split": splits[group], "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
            "source": item.source, "group": group, "kind": item.kind, "original": item.original,
            "rgba": f"{item.source}/{item.name}.png",
        })
    return {"dataset": "offline", "images": images}


def count(images: list[dict]) -> dict:
    return {"images": len(images), "captions": sum(len(i["sentences"]) for i in images),
            "splits": {split: sum(i["split"] == split for i in images) for split in SPLITS},
            "kinds": dict(sorted(Counter(i["kind"] for i in images).items()))}


def manifest(dataset: dict, roots: dict[str, Path], dropped: Counter, failures: dict[str, str],
             seed: int, size: int, seconds: float) -> dict:
    images = dataset["images"]
    sources = {}
    for source, root in roots.items():
        package = PACKAGES[source]
        licence_path = root / package.licence_file if source == "openmoji" else Path(package.licence_file)
        sources[source] = {"package": package.name, "version": package_version(source, root),
                           "licence": package.licence,
                           "licence_file": str(licence_path), "location": str(root),
                           **count([i for i in images if i["source"] == source])}
    filters = {source: {reason: n for (src, reason), n in sorted(dropped.items(), key=lambda kv: -kv[1])
                        if src == source} for source in roots}
    return {
        "dataset": "offline", "notice": NOTICE, "seed": seed, "size": size, **count(images),
        "sources": sources,
        "filters": filters,
        "filters_note": "numbers of descriptions dropped by each rule, except where the rule names "
                        "files, emojis or pictures; a picture is kept if any description survives",
        "skipped": [{"file": f, "reason": r} for f, r in sorted(failures.items())],
        "layout": {"images": "images/<filepath>/<filename> (RGB JPEG on white)",
                   "rgba": "rgba/<rgba> (PNG with alpha, same square canvas)"},
        "build_seconds": round(seconds, 1),
    }


# --------------------------------------------------------------------------------------- main

def source_roots(sources: list[str], overrides: dict[str, str | None]) -> dict[str, Path]:
    """Where each source is installed (``dpkg -L`` for the Debian ones), or the override."""
    found = {
        "tuxpaint": lambda: dpkg_folder("tuxpaint-stamps-default", "/stamps", PACKAGES["tuxpaint"].location),
        "openmoji": lambda: Path(PACKAGES["openmoji"].location),
        "openclipart": lambda: dpkg_folder("openclipart-svg", "/openclipart/svg", PACKAGES["openclipart"].location),
    }
    return {s: Path(overrides[s]) if overrides.get(s) else found[s]() for s in sources}


def collect(roots: dict[str, Path], skin_tones: bool, dropped: Counter) -> list[Item]:
    readers = {"tuxpaint": lambda root: find_tuxpaint(root, dropped),
               "openmoji": lambda root: find_openmoji(root, dropped, skin_tones),
               "openclipart": lambda root: find_openclipart(root, dropped)}
    items = []
    for source, root in roots.items():
        found = readers[source](root)
        print(f"{source}: {len(found)} pictures with a usable caption in {root}")
        items += found
    return sorted(items, key=lambda item: (item.source, item.name))


def build(out: Path, roots: dict[str, Path], seed: int = 0, size: int = 256, workers: int = 2,
          skin_tones: bool = False) -> dict:
    """Build the dataset from ``roots`` ({source: folder}) into ``out``; return the manifest."""
    start = time.monotonic()
    for source, root in roots.items():
        check_source(source, root)
    dropped: Counter = Counter()
    items = collect(roots, skin_tones, dropped)
    for source in roots:
        for folder in ("images", "rgba"):
            shutil.rmtree(out / folder / source, ignore_errors=True)
    if any(item.original.endswith(".svg") for item in items):
        try:
            import cairosvg  # noqa: F401
        except (ImportError, OSError) as error:  # OSError: the cairo C library is missing
            raise SystemExit(f"rendering SVGs needs cairosvg and libcairo2 (pip install cairosvg): {error}")
    failures = render_all(items, out, size, workers)
    for original, reason in sorted(failures.items()):
        print(f"skipped {original}: {reason}", file=sys.stderr)
    items = [item for item in items if item.original not in failures]
    groups = group_items(items)
    dataset = karpathy_dataset(items, groups, assign_splits(items, groups, seed))
    info = manifest(dataset, roots, dropped, failures, seed, size, time.monotonic() - start)
    write_json(out / "dataset_offline.json", dataset)
    write_json(out / "manifest.json", info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("offline_data"))
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated subset of {SOURCES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="side of the square images in pixels")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--skin-tones", action="store_true",
                        help="keep OpenMoji's skin-tone variants (grouped with their base emoji)")
    for source in SOURCES:
        parser.add_argument(f"--{source}-dir", help=f"where {PACKAGES[source].name} is (default: found)")
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        parser.error(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)}")
    roots = source_roots(sources, {s: getattr(args, f"{s}_dir") for s in SOURCES})
    problems = []
    for source, root in roots.items():
        try:
            check_source(source, root)
        except SourceMissing as missing:
            problems.append(str(missing))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    info = build(args.out, roots, args.seed, args.size, args.workers, args.skin_tones)
    print(f"\n{info['images']} images, {info['captions']} captions in {args.out} "
          f"({info['build_seconds']} s); {len(info['skipped'])} files skipped")
    for source, numbers in info["sources"].items():
        print(f"  {source:12s} {numbers['images']:5d} images {numbers['captions']:5d} captions  "
              f"splits {numbers['splits']}  kinds {numbers['kinds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
