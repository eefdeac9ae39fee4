"""Build captioner/guidance/imagenet_names.json: the name people use for each ImageNet-1k class.

Guided decoding forces the words for the encoder's confident ImageNet classes into a caption,
and a caption says "cat", not "tabby" or "Egyptian cat". This script maps each class to such
an entry-level name (a "concept") in two steps:

1. A first guess from WordNet 3.0: the concept of the class's nearest "anchor" synset on its
   hypernym paths (``dog.n.01`` -> "dog", ``domestic_cat.n.01`` -> "cat"), or else the
   class's own label.
2. The hand corrections in data_scripts/imagenet_names_corrections.json, reviewed class by
   class: the anchors themselves, per-class concepts, the classes that show a person, and
   each concept's parent, synonyms, plural and whether it is too generic to force.

Only this script reads WordNet (set it up with data_scripts/install_wordnet.sh); captioner
reads the JSON it writes.

    python data_scripts/build_imagenet_names.py [--nltk-data DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORRECTIONS = ROOT / "data_scripts" / "imagenet_names_corrections.json"
OUTPUT = ROOT / "captioner" / "guidance" / "imagenet_names.json"
NUM_CLASSES = 1000

# Plurals that the suffix rules below get wrong; the last word of a phrase is looked up.
IRREGULAR_PLURALS = {
    "mouse": "mice", "goose": "geese", "ox": "oxen", "foot": "feet", "tooth": "teeth",
    "knife": "knives", "wolf": "wolves", "leaf": "leaves", "loaf": "loaves", "shelf": "shelves",
    "scarf": "scarves", "calf": "calves", "half": "halves", "thief": "thieves",
    "potato": "potatoes", "tomato": "tomatoes", "volcano": "volcanoes", "mosquito": "mosquitoes",
    "sheep": "sheep", "fish": "fish", "deer": "deer", "moose": "moose", "bison": "bison",
    "series": "series", "species": "species", "salmon": "salmon", "cactus": "cacti", "fungus": "fungi",
}


class BuildError(Exception):
    """Something in the inputs or corrections is wrong; the message says what and where."""


def pluralize(name: str) -> str:
    """The English plural of a lower-case noun or noun phrase (its last word is inflected)."""
    head, _, last = name.rpartition(" ")
    prefix = head + " " if head else ""
    if last in IRREGULAR_PLURALS:
        return prefix + IRREGULAR_PLURALS[last]
    if last.endswith("fish"):  # goldfish, starfish, jellyfish
        return prefix + last
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return prefix + last + "es"
    if last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        return prefix + last[:-1] + "ies"
    return prefix + last + "s"


def imagenet_wnids(lines: list[str]) -> list[str]:
    """ImageNet-1k wnids in torchvision's class order, from darknet's imagenet.labels.list."""
    wnids = sorted(line.strip() for line in lines[:NUM_CLASSES])
    if len(set(wnids)) != NUM_CLASSES or not all(w[:1] == "n" and w[1:].isdigit() for w in wnids):
        raise BuildError("imagenet.labels.list: its first 1000 lines are not 1000 distinct wnids")
    return wnids


def nearest_anchor(paths: list[list[str]], anchors: dict[str, str]) -> tuple[str, int] | None:
    """The anchor synset nearest the class and its distance, over all hypernym paths.

    ``paths`` are root-to-class lists of synset names (as WordNet's ``hypernym_paths``), so
    the class is the last element of each, at distance 0. Of anchors equally near, the one
    deepest below its root (the more specific) wins, then the first name: nltk returns the
    paths in no fixed order, and the result must not depend on it.
    """
    found = []
    for path in paths:
        for distance, synset in enumerate(reversed(path)):
            if synset in anchors:
                found.append((distance, -(len(path) - 1 - distance), synset))
                break
    if not found:
        return None
    distance, _, synset = min(found)
    return synset, distance


def parent_guess(paths: list[list[str]], anchors: dict[str, str], concept: str) -> str | None:
    """The concept of the nearest anchor above the class whose concept is not ``concept``."""
    above = {s: c for s, c in anchors.items() if c != concept}
    found = nearest_anchor(paths, above)
    return anchors[found[0]] if found else None


def first_guess(label: str, paths: list[list[str]], anchors: dict[str, str], generic: set[str]) -> str:
    """WordNet's guess for a class: its nearest anchor's concept, or else its own label.

    Anchors for generic concepts ("animal", "device") only suggest parents: a class under
    nothing more specific keeps its label ("abacus"), never a name too vague to force.
    """
    found = nearest_anchor(paths, {s: c for s, c in anchors.items() if c not in generic})
    return anchors[found[0]] if found else label.lower()


def concept_table(used: dict[str, Counter], corrections: dict[str, dict]) -> dict[str, dict]:
    """One entry per concept: the corrections' fields, else plural by rule, most common parent.

    ``used`` maps each concept the classes use to a Counter of the parents WordNet suggests.
    Every parent is a concept too, so parents are added (recursively).
    """
    table = {}
    pending = sorted(used)
    while pending:
        name = pending.pop()
        if name in table:
            continue
        given = corrections.get(name, {})
        unknown = set(given) - {"parent", "plural", "synonyms", "generic"}
        if unknown:
            raise BuildError(f"corrections: concept {name!r} has unknown fields {sorted(unknown)}")
        if "parent" in given:
            parent = given["parent"]
        else:
            suggested = used.get(name, Counter())
            parent = min(suggested, key=lambda p: (-suggested[p], p)) if suggested else None
        table[name] = {
            "plural": given.get("plural", pluralize(name)),
            "synonyms": sorted(given.get("synonyms", [])),
            "parent": parent,
            "generic": bool(given.get("generic", False)),
        }
        if parent is not None:
            pending.append(parent)
    return table


def check(document: dict, person_words: set[str]) -> None:
    """Raise BuildError on a broken mapping: unknown or generic class concepts, cycles, people."""
    concepts, classes = document["concepts"], document["classes"]
    problems = []
    if [c["index"] for c in classes] != list(range(NUM_CLASSES)):
        problems.append(f"classes must be indices 0..{NUM_CLASSES - 1} in order")
    for entry in classes:
        concept = entry["concept"]
        where = f"class {entry['index']} ({entry['label']})"
        if entry["person"] and concept is not None:
            problems.append(f"{where} shows a person but has concept {concept!r}")
        elif concept is not None and concept not in concepts:
            problems.append(f"{where}: concept {concept!r} has no entry")
        elif concept is not None and concepts[concept]["generic"]:
            problems.append(f"{where}: concept {concept!r} is generic; name the thing itself")
    owners: dict[str, str] = {}
    for name, info in concepts.items():
        for word in info["synonyms"]:
            if word in concepts or owners.setdefault(word, name) != name:
                problems.append(f"concept {name!r}: synonym {word!r} also names another concept")
        words = {name, info["plural"], *info["synonyms"]}
        if words & person_words or name != name.lower():
            problems.append(f"concept {name!r}: a person word or not lower case")
        if name in info["synonyms"]:
            problems.append(f"concept {name!r} lists itself as a synonym")
        seen = [name]
        while info is not None and info["parent"] is not None:
            if info["parent"] not in concepts:
                problems.append(f"concept {seen[-1]!r}: parent {info['parent']!r} has no entry")
                break
            if info["parent"] in seen:
                problems.append(f"concept {name!r}: parent cycle {' -> '.join(seen + [info['parent']])}")
                break
            seen.append(info["parent"])
            info = concepts[info["parent"]]
    if problems:
        raise BuildError("imagenet names:\n  " + "\n  ".join(problems))


def build(labels: list[str], wnids: list[str], paths: list[list[list[str]]],
          corrections: dict, licence: str) -> dict:
    """The output document from the classes' labels, wnids and hypernym paths (pure)."""
    anchors = corrections["anchors"]
    overrides = corrections["classes"]
    person = corrections["person"]
    generic = {name for name, info in corrections["concepts"].items() if info.get("generic")}
    used: dict[str, Counter] = {}
    classes = []
    for index, (label, wnid, class_paths) in enumerate(zip(labels, wnids, paths)):
        key = str(index)
        override = overrides.get(key)
        for given, where in ((override and override[0], "classes"), (person.get(key), "person")):
            if given is not None and given != label:
                raise BuildError(f"corrections: {where}: class {index} is {label!r}, not {given!r}")
        if key in person:
            concept = None
        elif override is not None:
            concept = override[1]
        else:
            concept = first_guess(label, class_paths, anchors, generic)
        if concept is not None:
            parent = parent_guess(class_paths, anchors, concept)
            used.setdefault(concept, Counter()).update([parent] if parent else [])
        classes.append({"index": index, "wnid": wnid, "label": label,
                        "concept": concept, "person": key in person})
    concepts = concept_table(used, corrections["concepts"])
    unused = sorted(set(corrections["concepts"]) - set(concepts))
    if unused:
        raise BuildError(f"corrections: concepts no class or parent uses: {unused}")
    document = {
        "format": "captioner-imagenet-names",
        "version": 1,
        "source": ("WordNet 3.0 hypernyms of the ImageNet-1k wnids (darknet's imagenet.labels.list)"
                   " and torchvision's class labels, with the hand corrections in"
                   " data_scripts/imagenet_names_corrections.json;"
                   " built by data_scripts/build_imagenet_names.py"),
        "licence": licence,
        "concepts": concepts,
        "classes": classes,
    }
    check(document, set(corrections["person_words"]))
    return document


def wordnet_inputs(nltk_data: Path) -> tuple[list[str], list[list[list[str]]], str]:
    """The wnids, each class's hypernym paths (synset names) and the WordNet licence text."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    wordnet_dir = nltk_data / "corpora" / "wordnet"
    wnid_list = nltk_data / "imagenet.labels.list"
    for needed in (wordnet_dir / "data.noun", wordnet_dir / "LICENSE", wnid_list):
        if not needed.is_file():
            raise BuildError(f"{needed} not found: run data_scripts/install_wordnet.sh {nltk_data}")
    nltk.data.path.insert(0, str(nltk_data))  # nltk reads only from folders on its path
    wordnet = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
    wnids = imagenet_wnids(wnid_list.read_text().splitlines())
    paths = []
    for wnid in wnids:
        synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
        paths.append(sorted([s.name() for s in path] for path in synset.hypernym_paths()))
    return wnids, paths, (wordnet_dir / "LICENSE").read_text().strip()


def torchvision_labels() -> list[str]:
    """torchvision's ImageNet-1k class labels (offline: they ship in the package)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nltk-data", type=Path,
                        default=Path(os.environ.get("NLTK_DATA", ROOT / "nltk_data")),
                        help="folder set up by install_wordnet.sh (default $NLTK_DATA or nltk_data/)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        wnids, paths, licence = wordnet_inputs(args.nltk_data)
        corrections = json.loads(CORRECTIONS.read_text())
        document = build(torchvision_labels(), wnids, paths, corrections, licence)
    except BuildError as error:
        print(f"build_imagenet_names.py: {error}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {args.output}: {NUM_CLASSES} classes, {len(document['concepts'])} concepts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
