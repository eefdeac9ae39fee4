"""The committed ImageNet-1k names (captioner/guidance/imagenet_names.json) and their build script.

None of these need WordNet: the JSON is checked as committed, and the build script's
derivation is checked on hand-built hypernym trees.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ROOT / "captioner" / "guidance" / "imagenet_names.json"
sys.path.insert(0, str(ROOT / "data_scripts"))

import build_imagenet_names as bn  # noqa: E402

PERSON_WORDS = {"person", "people", "man", "men", "woman", "women", "boy", "girl", "child",
                "children", "kid", "baby", "player", "groom", "bride", "diver", "human"}
# Mass and invariant nouns: the only concepts whose plural may be the name itself.
INVARIANT = {"binoculars", "bread", "broccoli", "chocolate", "coffee", "corn", "dough",
             "fish", "food", "furniture", "guacamole", "hair spray", "hay", "ice cream", "lotion",
             "makeup", "mashed potatoes", "pasta", "perfume", "ruins", "salmon", "sheep", "soup",
             "sunscreen", "toilet paper", "velvet", "wine", "yarn", "bison",
             "eggnog", "goldfish", "clownfish", "jellyfish", "starfish", "crayfish"}


@pytest.fixture(scope="module")
def names():
    return json.loads(NAMES.read_text())


@pytest.fixture(scope="module")
def by_label(names):
    return {c["label"]: c for c in names["classes"]}


def test_header_and_licence(names):
    assert names["format"] == "captioner-imagenet-names" and names["version"] == 1
    assert "build_imagenet_names.py" in names["source"]
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in names["licence"]
    assert "Permission to use, copy, modify and distribute" in names["licence"]


def test_classes_follow_torchvision(names):
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    classes = names["classes"]
    assert [c["index"] for c in classes] == list(range(1000))
    assert [c["label"] for c in classes] == list(categories)
    wnids = [c["wnid"] for c in classes]
    assert wnids == sorted(set(wnids)) and len(wnids) == 1000  # torchvision's order is sorted wnids
    assert classes[281]["wnid"] == "n02123045"  # tabby, as in the format's example


@pytest.mark.parametrize("label, concept", [
    ("tabby", "cat"), ("Egyptian cat", "cat"), ("espresso", "coffee"), ("analog clock", "clock"),
    ("wall clock", "clock"), ("missile", "rocket"), ("projectile", "rocket"),
    ("Granny Smith", "apple"), ("ice bear", "polar bear"), ("golden retriever", "dog"),
    ("goldfinch", "bird"), ("Chihuahua", "dog"), ("hen", "chicken"), ("cock", "rooster"),
    ("great grey owl", "owl"), ("bald eagle", "eagle"), ("king penguin", "penguin"),
    ("Indian cobra", "cobra"), ("green mamba", "snake"), ("tench", "fish"),
    ("great white shark", "shark"), ("goldfish", "goldfish"), ("sports car", "car"),
    ("convertible", "car"), ("cab", "taxi"), ("pickup", "truck"), ("tow truck", "truck"),
    ("trailer truck", "truck"), ("fire engine", "fire truck"), ("airliner", "plane"),
    ("warplane", "plane"), ("Persian cat", "cat"),
])
def test_known_answers(by_label, label, concept):
    assert by_label[label]["concept"] == concept and not by_label[label]["person"]


def test_the_two_labels_torchvision_disambiguates(names):
    classes = names["classes"]
    assert (classes[134]["label"], classes[134]["concept"]) == ("crane bird", "bird")
    assert (classes[517]["label"], classes[517]["concept"]) == ("crane", "crane")
    assert [classes[i]["label"] for i in (638, 639)] == ["maillot", "maillot tank suit"]


@pytest.mark.parametrize("label", [
    "ballplayer", "groom", "scuba diver", "jersey", "suit", "miniskirt", "bikini",
    "swimming trunks", "lab coat", "military uniform", "academic gown", "kimono", "abaya",
    "poncho", "sweatshirt", "cardigan", "wig", "bow tie", "Windsor tie", "bulletproof vest",
    "cowboy hat", "sombrero", "football helmet", "crash helmet", "sunglass", "sunglasses",
    "cowboy boot",
])
def test_person_classes(by_label, label):
    assert by_label[label]["person"] and by_label[label]["concept"] is None


def ancestors(names, concept):
    chain = [concept]
    while names["concepts"][chain[-1]]["parent"] is not None:
        chain.append(names["concepts"][chain[-1]]["parent"])
    return chain


# Reviewed class by class (issue "Captions that are right", point 11): what the thing in the
# photo is called, and what it is, up the concept tree.
@pytest.mark.parametrize("label, chain", [
    ("gibbon", ["gibbon", "ape", "animal"]),  # apes, not monkeys
    ("siamang", ["gibbon", "ape", "animal"]),  # the largest gibbon
    ("chimpanzee", ["chimpanzee", "ape", "animal"]),
    ("killer whale", ["orca", "whale", "animal"]),
    ("grey whale", ["whale", "animal"]),
    ("stingray", ["stingray", "ray", "fish", "animal"]),
    ("electric ray", ["ray", "fish", "animal"]),
    ("gazelle", ["gazelle", "antelope", "animal"]),
    ("impala", ["antelope", "animal"]),
    ("harvestman", ["harvestman", "animal"]),  # an arachnid, not a spider
    ("isopod", ["isopod", "animal"]),  # a crustacean (woodlouse), not a bug
    ("chambered nautilus", ["nautilus", "animal"]),  # a mollusc, not a seashell
    ("conch", ["seashell"]),
    ("dial telephone", ["phone"]),
    ("cellular telephone", ["cell phone", "phone"]),
    ("pay-phone", ["pay phone", "phone"]),
    ("hand-held computer", ["handheld computer", "computer"]),  # a PDA, not a phone
    ("scabbard", ["scabbard"]),  # holds a sword, is not one
    ("letter opener", ["letter opener"]),
    ("cleaver", ["knife"]),
    ("soup bowl", ["bowl"]),
    ("beer glass", ["glass"]),
    ("pickelhaube", ["helmet"]),  # worn in museums more than by people
])
def test_reviewed_concepts(names, by_label, label, chain):
    assert ancestors(names, by_label[label]["concept"]) == chain


@pytest.mark.parametrize("concept, present, absent", [
    ("phone", {"telephone"}, {"cell phone", "cellphone", "mobile phone"}),
    ("cell phone", {"cellphone", "mobile phone"}, set()),
    ("handheld computer", {"pda", "palmtop"}, set()),
    ("orca", {"killer whale"}, set()),
    ("isopod", {"woodlouse", "pill bug"}, set()),
    ("nautilus", {"chambered nautilus"}, set()),
    ("scabbard", {"sheath"}, set()),
    ("letter opener", {"paper knife"}, set()),
    ("rooster", {"cockerel"}, {"cock"}),  # vulgar, a tap, a gun's hammer
    ("sneaker", {"running shoe"}, {"trainer"}),  # one who trains (US)
    ("tram", {"streetcar"}, {"trolley"}),  # a shopping or luggage cart (UK)
    ("truck", set(), {"lorry"}),  # British only, and a horse-drawn wagon
])
def test_reviewed_synonyms(names, concept, present, absent):
    synonyms = set(names["concepts"][concept]["synonyms"])
    assert present <= synonyms and not absent & synonyms


@pytest.mark.parametrize("word", ["cock", "trainer", "trolley", "lorry", "sword", "bug"])
def test_misleading_words_name_no_concept(names, word):
    forms = {f for name, c in names["concepts"].items() for f in (name, c["plural"], *c["synonyms"])}
    assert word not in forms


def test_reviewed_plurals(names):
    assert names["concepts"]["harvestman"]["plural"] == "harvestmen"
    assert names["concepts"]["nautilus"]["plural"] == "nautiluses"


def test_class_concepts_exist_and_are_not_generic(names):
    concepts = names["concepts"]
    for entry in names["classes"]:
        if entry["person"]:
            assert entry["concept"] is None, entry
        elif entry["concept"] is not None:
            assert not concepts[entry["concept"]]["generic"], entry


def test_generic_decisions(names):
    concepts = names["concepts"]
    assert {"animal", "vehicle", "instrument", "furniture"} <= {n for n, c in concepts.items() if c["generic"]}
    for name in ("bird", "dog", "fish", "fruit", "boat", "flower", "snake", "car", "food"):
        assert not concepts[name]["generic"], name


@pytest.mark.parametrize("child, parent", [
    ("owl", "bird"), ("eagle", "bird"), ("parrot", "bird"), ("rooster", "chicken"),
    ("shark", "fish"), ("cobra", "snake"), ("apple", "fruit"), ("banana", "fruit"),
    ("orange", "fruit"), ("lemon", "fruit"), ("strawberry", "fruit"), ("broccoli", "vegetable"),
    ("cauliflower", "vegetable"), ("cabbage", "vegetable"), ("car", "vehicle"),
    ("truck", "vehicle"), ("bus", "vehicle"), ("canoe", "boat"), ("speedboat", "boat"),
    ("gondola", "boat"), ("polar bear", "bear"), ("taxi", "car"), ("fire truck", "truck"),
    ("bird", "animal"), ("dog", "animal"), ("tiger", "big cat"), ("peacock", "bird"),
])
def test_parents(names, child, parent):
    assert names["concepts"][child]["parent"] == parent


def test_parents_form_a_tree(names):
    concepts = names["concepts"]
    for name, info in concepts.items():
        seen = {name}
        while info["parent"] is not None:
            assert info["parent"] in concepts, (name, info["parent"])
            assert info["parent"] not in seen, f"cycle through {name}"
            seen.add(info["parent"])
            info = concepts[info["parent"]]


def test_concept_words(names):
    for name, info in names["concepts"].items():
        words = [name, info["plural"], *info["synonyms"]]
        assert all(w == w.lower() and w.strip() == w and w for w in words), name
        assert not set(words) & PERSON_WORDS, name
        assert name not in info["synonyms"] and info["synonyms"] == sorted(set(info["synonyms"]))
        assert (info["plural"] == name) == (name in INVARIANT), name
    owners = Counter(s for info in names["concepts"].values() for s in info["synonyms"])
    assert not [s for s, n in owners.items() if n > 1 or s in names["concepts"]]


@pytest.mark.parametrize("name, plural", [
    ("cat", "cats"), ("bus", "buses"), ("goose", "geese"), ("sheep", "sheep"),
    ("knife", "knives"), ("computer mouse", "computer mice"), ("butterfly", "butterflies"),
    ("coffee", "coffee"), ("wolf", "wolves"), ("fox", "foxes"), ("bookshelf", "bookshelves"),
    ("mortar and pestle", "mortars and pestles"), ("polar bear", "polar bears"),
])
def test_plurals(names, name, plural):
    assert names["concepts"][name]["plural"] == plural


def test_every_concept_is_used(names):
    used = {c["concept"] for c in names["classes"]} | {c["parent"] for c in names["concepts"].values()}
    assert set(names["concepts"]) <= used


def test_file_is_small_and_deterministic(names):
    text = NAMES.read_text()
    assert len(text.encode()) < 1_000_000
    assert text == json.dumps(names, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# The build script's pure functions, on hand-built inputs.

TREE = [  # root-to-class hypernym paths, one list of paths per class
    [["entity", "animal", "dog", "hound", "beagle"]],
    [["entity", "animal", "bird", "finch", "goldfinch"]],
    [["entity", "animal", "bird", "owl", "barn_owl"]],
    [["entity", "artifact", "abacus"]],
    [["entity", "animal", "salamander"]],
    [["entity", "animal", "bird", "chicken", "hen"], ["entity", "food", "poultry", "hen"]],
]
LABELS = ["beagle", "goldfinch", "barn owl", "Abacus", "eft", "hen"]
ANCHORS = {"animal": "animal", "dog": "dog", "bird": "bird", "owl": "owl", "chicken": "chicken",
           "food": "food"}


@pytest.mark.parametrize("name, plural", [
    ("dog", "dogs"), ("bus", "buses"), ("box", "boxes"), ("church", "churches"),
    ("dish", "dishes"), ("butterfly", "butterflies"), ("monkey", "monkeys"), ("mouse", "mice"),
    ("polar bear", "polar bears"), ("wolf", "wolves"), ("goldfish", "goldfish"),
    ("sheep", "sheep"), ("tomato", "tomatoes"), ("piano", "pianos"), ("fire truck", "fire trucks"),
])
def test_pluralize(name, plural):
    assert bn.pluralize(name) == plural


def test_imagenet_wnids_sorts_the_first_thousand():
    lines = [f"n{i:08d}" for i in range(999, -1, -1)] + ["n99999999"]
    assert bn.imagenet_wnids(lines) == [f"n{i:08d}" for i in range(1000)]
    with pytest.raises(bn.BuildError, match="imagenet.labels.list"):
        bn.imagenet_wnids(lines[:999] + lines[:1])


def test_nearest_anchor():
    assert bn.nearest_anchor(TREE[0], ANCHORS) == ("dog", 2)
    assert bn.nearest_anchor(TREE[2], ANCHORS) == ("owl", 1)
    assert bn.nearest_anchor(TREE[3], ANCHORS) is None
    # Over several paths the nearest anchor wins, whichever path it is on.
    assert bn.nearest_anchor(TREE[5], ANCHORS) == ("chicken", 1)
    assert bn.nearest_anchor([["a", "b", "m", "x"], ["c", "x"]], {"b": "B", "c": "C"}) == ("c", 1)


def test_nearest_anchor_ties_go_to_the_more_specific_anchor_in_any_path_order():
    # As for WordNet's peacock: "animal" and "bird" are both three steps up, on different paths.
    paths = [["entity", "organism", "animal", "game", "game_bird", "x"],
             ["entity", "organism", "animal", "vertebrate", "bird", "galliform", "game_bird", "x"]]
    anchors = {"animal": "animal", "bird": "bird"}
    assert bn.nearest_anchor(paths, anchors) == ("bird", 3)
    assert bn.nearest_anchor(paths[::-1], anchors) == ("bird", 3)


def test_first_guess_skips_generic_anchors_and_falls_back_to_the_label():
    generic = {"animal"}
    guesses = [bn.first_guess(label, paths, ANCHORS, generic) for label, paths in zip(LABELS, TREE)]
    assert guesses == ["dog", "bird", "owl", "abacus", "eft", "chicken"]


def test_parent_guess():
    assert bn.parent_guess(TREE[2], ANCHORS, "owl") == "bird"
    assert bn.parent_guess(TREE[0], ANCHORS, "dog") == "animal"
    assert bn.parent_guess(TREE[3], ANCHORS, "abacus") is None


def test_concept_table_uses_corrections_and_adds_parents():
    used = {"owl": Counter(["bird", "bird", "animal"]), "abacus": Counter()}
    corrections = {"bird": {"synonyms": ["birdie"], "parent": "animal"}, "animal": {"generic": True}}
    table = bn.concept_table(used, corrections)
    assert set(table) == {"owl", "abacus", "bird", "animal"}
    assert table["owl"] == {"plural": "owls", "synonyms": [], "parent": "bird", "generic": False}
    assert table["bird"]["synonyms"] == ["birdie"] and table["bird"]["parent"] == "animal"
    assert table["abacus"]["parent"] is None and table["animal"]["parent"] is None
    assert table["animal"]["generic"] is True
    with pytest.raises(bn.BuildError, match="unknown fields"):
        bn.concept_table({"owl": Counter()}, {"owl": {"parnet": "bird"}})


@pytest.fixture
def six_classes(monkeypatch):
    monkeypatch.setattr(bn, "NUM_CLASSES", 6)
    return {
        "anchors": ANCHORS,
        "concepts": {"animal": {"generic": True}, "chicken": {"parent": "poultry"}},
        "classes": {"4": ["eft", "newt"]},
        "person": {},
        "person_words": ["person", "groom"],
    }


def test_build_on_a_fake_tree(six_classes):
    document = bn.build(LABELS, [f"n{i:08d}" for i in range(6)], TREE, six_classes, "notice")
    assert [c["concept"] for c in document["classes"]] == ["dog", "bird", "owl", "abacus", "newt", "chicken"]
    concepts = document["concepts"]
    assert concepts["owl"]["parent"] == "bird" and concepts["bird"]["parent"] == "animal"
    assert concepts["chicken"]["parent"] == "poultry"  # the correction, not WordNet's "bird"
    assert concepts["poultry"] == {"plural": "poultries", "synonyms": [], "parent": None, "generic": False}
    assert concepts["newt"]["parent"] == "animal" and concepts["abacus"]["parent"] is None
    assert document["licence"] == "notice"


def test_build_rejects_bad_corrections(six_classes):
    wnids = [f"n{i:08d}" for i in range(6)]
    with pytest.raises(bn.BuildError, match="class 4 is 'eft', not 'newt'"):
        bn.build(LABELS, wnids, TREE, {**six_classes, "classes": {"4": ["newt", "newt"]}}, "")
    with pytest.raises(bn.BuildError, match="is generic"):
        bn.build(LABELS, wnids, TREE, {**six_classes, "classes": {"4": ["eft", "animal"]}}, "")
    cycle = {**six_classes["concepts"], "owl": {"parent": "bird"}, "bird": {"parent": "owl"}}
    with pytest.raises(bn.BuildError, match="parent cycle"):
        bn.build(LABELS, wnids, TREE, {**six_classes, "concepts": cycle}, "")
    with pytest.raises(bn.BuildError, match="person word"):
        bn.build(LABELS, wnids, TREE, {**six_classes, "classes": {"4": ["eft", "groom"]}}, "")
    with pytest.raises(bn.BuildError, match="no class or parent uses"):
        bn.build(LABELS, wnids, TREE, {**six_classes, "concepts": {"unused": {}}}, "")


def test_person_classes_get_no_concept(six_classes):
    wnids = [f"n{i:08d}" for i in range(6)]
    document = bn.build(LABELS, wnids, TREE, {**six_classes, "person": {"0": "beagle"}}, "")
    assert document["classes"][0] == {"index": 0, "wnid": "n00000000", "label": "beagle",
                                      "concept": None, "person": True}
    assert "dog" not in document["concepts"]
