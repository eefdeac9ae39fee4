"""Class labels: one forgiving resolver for every command that takes a class."""

import pytest

from captioner.models.labels import resolve_class

CATEGORIES = ["cat", "dog", "sea lion", "banana", "great white shark", "tiger shark"]


@pytest.mark.parametrize("label, index", [
    ("banana", 3), ("Bananas", 3), ("Great-White_Shark", 4), ("SEA LION", 2), ("sealion", 2), ("3", 3), (1, 1),
    ("white", 4),
])
def test_class_names_match_forgivingly(label, index):
    assert resolve_class(CATEGORIES, label) == index


def test_unknown_and_ambiguous_class_names():
    with pytest.raises(ValueError, match=r"unknown label 'bananna'; closest: banana \(3\)"):
        resolve_class(CATEGORIES, "bananna")
    with pytest.raises(ValueError, match=r"ambiguous: great white shark \(4\), tiger shark \(5\)"):
        resolve_class(CATEGORIES, "shark")
    with pytest.raises(ValueError, match="outside 0..5"):
        resolve_class(CATEGORIES, "6")


def test_names_shared_by_several_classes_and_models_without_names():
    # ImageNet has such pairs ("cardigan": the corgi and the sweater); a name must not pick one silently
    with pytest.raises(ValueError, match=r"label 'CAT' names several classes \(0, 1\); give the class index"):
        resolve_class(["cat", "Cat", "dog", "emu"], "CAT")
    assert resolve_class(None, "7") == resolve_class(None, 7) == 7
    with pytest.raises(ValueError, match="this model has no class names; give a class index"):
        resolve_class(None, "dog")
    with pytest.raises(ValueError, match="class index -1 is negative"):
        resolve_class(CATEGORIES, -1)
    with pytest.raises(ValueError, match="no letters or digits"):
        resolve_class(CATEGORIES, " _ ")


def test_imagenet_names_as_typed_on_a_command_line(lite0):
    categories = lite0.categories
    assert categories[207] == "golden retriever"
    assert resolve_class(categories, "golden_retriever") == resolve_class(categories, "Golden Retriever") == 207
    assert resolve_class(categories, "Tabby") == resolve_class(categories, "281") == 281
    with pytest.raises(ValueError, match=r"names several classes \(264, 474\)"):
        resolve_class(categories, "cardigan")
    with pytest.raises(ValueError, match=r"'retriever' is ambiguous: flat-coated retriever \(205\)"):
        resolve_class(categories, "retriever")
