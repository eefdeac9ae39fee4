"""Object naming: the accepted-names rule on a hand-built hierarchy, phrase matching, the rate,
and reading labels.jsonl."""

import json

import pytest

from captioner.metrics.naming import (LabelledPhoto, accepted_names, close_parents, names_object,
                                      naming_rate, plurals, read_labels)


class TinyHierarchy:
    """A hand-built noun hierarchy: synset -> (lemmas, parents)."""

    NODES = {
        "entity.n.01": ([], []),
        "object.n.01": (["object"], ["entity.n.01"]),
        "animal.n.01": (["animal", "beast"], ["object.n.01"]),
        "mammal.n.01": (["mammal"], ["animal.n.01"]),
        "carnivore.n.01": (["carnivore"], ["mammal.n.01"]),
        "feline.n.01": (["feline", "felid"], ["carnivore.n.01"]),
        "cat.n.01": (["cat", "true_cat"], ["feline.n.01"]),
        "house_cat.n.01": (["house_cat", "domestic_cat"], ["cat.n.01"]),
        "tabby.n.01": (["tabby"], ["house_cat.n.01"]),
        "wildcat.n.01": (["wildcat"], ["cat.n.01"]),
        "canine.n.01": (["canine"], ["carnivore.n.01"]),
        "domestic_animal.n.01": (["domestic_animal"], ["animal.n.01"]),
        "dog.n.01": (["dog"], ["canine.n.01", "domestic_animal.n.01"]),
        "golden_retriever.n.01": (["golden_retriever"], ["dog.n.01"]),
        "bear.n.01": (["bear"], ["carnivore.n.01"]),
        "polar_bear.n.01": (["polar_bear", "ice_bear"], ["bear.n.01"]),
        "rodent.n.01": (["rodent"], ["mammal.n.01"]),
        "mouse.n.01": (["mouse"], ["rodent.n.01"]),
        "organism.n.01": (["organism"], ["entity.n.01"]),
        "person.n.01": (["person", "individual"], ["organism.n.01"]),
        "man.n.01": (["man"], ["person.n.01"]),
        "woman.n.01": (["woman"], ["person.n.01"]),
        "child.n.01": (["child", "kid"], ["person.n.01"]),
        "astronaut.n.01": (["astronaut", "spaceman"], ["person.n.01"]),
        "storage.n.01": (["storage"], ["entity.n.01"]),
        "container.n.01": (["container"], ["storage.n.01"]),
        "box.n.01": (["box"], ["container.n.01"]),
        # figurative kinds of people, each word also (and first) something else
        "cad.n.01": (["cad", "dog"], ["person.n.01"]),
        "star.n.01": (["star"], ["object.n.01"]),
        "star.n.04": (["star"], ["person.n.01"]),
        "ace.n.03": (["ace"], ["person.n.01"]),
        "ace.n.01": (["ace"], ["object.n.01"]),
        # a tree whose word is more often its wood
        "tree.n.01": (["tree"], ["organism.n.01"]),
        "oak.n.02": (["oak"], ["object.n.01"]),
        "oak.n.01": (["oak"], ["tree.n.01"]),
    }
    IRREGULAR = {"mouse": ["mice"], "man": ["men"], "woman": ["women"], "child": ["children"]}
    #: tagged counts of (word, sense); senses not listed were never tagged
    COUNTS = {("dog", "dog.n.01"): 42, ("oak", "oak.n.02"): 5, ("oak", "oak.n.01"): 1}

    def lemmas(self, synset):
        return self.NODES[synset][0]

    def hypernyms(self, synset):
        return self.NODES[synset][1]

    def hyponyms(self, synset):
        return [name for name, (_, parents) in self.NODES.items() if synset in parents]

    def irregular_plurals(self, lemma):
        return self.IRREGULAR.get(lemma, [])

    def sense_counts(self, lemma):  # senses in the order NODES lists them
        return {name: self.COUNTS.get((lemma, name), 0) for name, (lemmas, _) in self.NODES.items()
                if lemma in lemmas}


H = TinyHierarchy()


def test_synonyms_and_their_plurals_name_the_label():
    names = accepted_names("cat.n.01", H)
    assert {"cat", "cats", "true cat", "true cats"} <= set(names)


def test_hyponyms_at_any_depth_name_the_label():
    names = accepted_names("cat.n.01", H)
    assert {"house cat", "domestic cat", "tabby", "tabbies", "wildcat"} <= set(names)
    assert "golden retriever" in accepted_names("dog.n.01", H)


def test_close_non_generic_parents_name_the_label():
    names = set(accepted_names("cat.n.01", H))
    assert {"feline", "felid", "felines", "carnivore", "carnivores"} <= names
    assert "domestic animal" in accepted_names("dog.n.01", H)


def test_distance_three_and_generic_parents_do_not():
    names = set(accepted_names("cat.n.01", H))
    assert "mammal" not in names           # distance 3
    assert not {"animal", "beast", "object"} & names
    assert not {"animal", "beast"} & set(accepted_names("dog.n.01", H))  # generic at distance 2


def test_the_climb_stops_at_a_generic_parent():
    # box -> container (generic) -> storage: storage is at distance 2, but only through a generic one
    assert close_parents("box.n.01", H) == []
    assert set(accepted_names("box.n.01", H)) == {"box", "boxes"}


def test_siblings_and_cousins_do_not_name_the_label():
    names = set(accepted_names("cat.n.01", H))
    assert not {"dog", "canine", "bear", "polar bear"} & names


def test_exact_accepted_names_of_a_small_label():
    assert accepted_names("polar_bear.n.01", H) == [
        "bear", "bears", "carnivore", "carnivores", "ice bear", "ice bears", "polar bear", "polar bears"]


def test_person_label_accepts_kinds_of_people_and_irregular_plurals():
    names = set(accepted_names("person.n.01", H))
    assert {"person", "persons", "man", "men", "woman", "women", "child", "children", "kid", "kids",
            "astronaut", "spaceman", "spacemen", "people"} <= names
    assert "organism" not in names


def test_a_kind_of_person_counts_only_in_its_most_common_sense():
    names = set(accepted_names("person.n.01", H))
    # "dog" is most often the animal: "a dog" does not name a person, "a cad" does
    assert "cad" in names and "dog" not in names and "dogs" not in names
    # equally common senses: the one listed first decides
    assert "ace" in names and "star" not in names
    # the animal itself keeps its name
    assert "dog" in accepted_names("dog.n.01", H)


def test_a_kind_of_person_without_known_senses_keeps_its_name():
    class NoSenses(TinyHierarchy):
        def sense_counts(self, lemma):
            return {}
    assert {"cad", "dog", "star"} <= set(accepted_names("person.n.01", NoSenses()))


def test_other_labels_keep_rarer_senses_of_their_kinds():
    # "oak" is more often the wood, but a caption saying "an oak" names the tree
    assert {"oak", "oaks"} <= set(accepted_names("tree.n.01", H))


def test_irregular_plural_from_the_hierarchy():
    assert "mice" in accepted_names("mouse.n.01", H)


@pytest.mark.parametrize("noun, plural", [
    ("cat", "cats"), ("box", "boxes"), ("bus", "buses"), ("church", "churches"), ("dish", "dishes"),
    ("puppy", "puppies"), ("toy", "toys"), ("fireman", "firemen"), ("human", "humans"),
    ("polar bear", "polar bears"), ("teddy bear", "teddy bears")])
def test_regular_plurals(noun, plural):
    assert plurals(noun) == [plural]


def test_irregular_plurals_are_added_to_the_regular_one():
    assert plurals("brother", ["brethren"]) == ["brothers", "brethren"]
    assert plurals("fireman", ["firemen"]) == ["firemen"]


@pytest.mark.parametrize("caption, named", [
    ("a cat on a mat", True),
    ("A CAT.", True),
    ("the cat's toy", True),
    ("two cats sleeping", True),
    ("a catalog of toys", False),
    ("people concatenate strings", False),
    ("a cat-like statue", False),
    ("", False),
])
def test_names_object_matches_whole_tokens(caption, named):
    assert names_object(caption, ["cat", "cats"]) is named


def test_names_object_matches_phrases_on_consecutive_tokens():
    accepted = ["polar bear"]
    assert names_object("a polar bear swimming", accepted)
    assert not names_object("a bear in the polar sea", accepted)
    assert not names_object("the polar region", accepted)
    assert not names_object("a polar bear", [])


def photo(name, label="cat.n.01", accept=("cat",)):
    return LabelledPhoto(image=f"/set/images/{name}.jpg", label=label, accept=tuple(accept))


def test_naming_rate_counts_and_rows():
    photos = [photo("a"), photo("b"), photo("c", "dog.n.01", ("dog", "puppy"))]
    captions = {"/set/images/a.jpg": "a cat on a sofa", "/set/images/b.jpg": "a catalog",
                "/set/images/c.jpg": "a puppy in the grass"}
    result = naming_rate(captions, photos)
    assert (result["named"], result["photos"]) == (2, 3)
    assert result["naming_rate"] == pytest.approx(200 / 3)
    assert [row["named"] for row in result["rows"]] == [True, False, True]
    assert result["rows"][2] == {"image": "/set/images/c.jpg", "label": "dog.n.01",
                                 "caption": "a puppy in the grass", "named": True}


def test_naming_rate_needs_a_caption_for_every_photo():
    with pytest.raises(ValueError, match="no caption for 1 of 2 photos"):
        naming_rate({"/set/images/a.jpg": "a cat"}, [photo("a"), photo("b")])


def test_naming_rate_of_no_photos_is_zero():
    assert naming_rate({}, [])["naming_rate"] == 0.0


def write_lines(tmp_path, *rows):
    path = tmp_path / "labels.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_read_labels_resolves_images_against_the_file(tmp_path):
    path = write_lines(tmp_path, {"image": "images/a.jpg", "label": "cat.n.01", "accept": ["cat", "cats"],
                                  "source": "x", "licence": "CC0-1.0"}, "")
    assert read_labels(path) == [LabelledPhoto(tmp_path / "images" / "a.jpg", "cat.n.01", ("cat", "cats"))]


@pytest.mark.parametrize("row, message", [
    ('{"image": "a.jpg", ', "labels.jsonl:2: not valid JSON"),
    ('["a.jpg"]', "labels.jsonl:2: expected a JSON object"),
    ({"image": "a.jpg", "accept": ["cat"]}, "labels.jsonl:2: missing label"),
    ({"image": "a.jpg", "label": "cat.n.01", "accept": []}, "labels.jsonl:2: empty 'accept' list for a.jpg"),
    ({"image": "a.jpg", "label": "cat.n.01", "accept": [" "]}, "labels.jsonl:2: empty 'accept'"),
    ({"image": "a.jpg", "label": "cat.n.01", "accept": "cat"}, "labels.jsonl:2: 'accept' must be a list"),
])
def test_read_labels_errors_name_file_and_line(tmp_path, row, message):
    good = {"image": "b.jpg", "label": "dog.n.01", "accept": ["dog"]}
    path = write_lines(tmp_path, good, row)
    with pytest.raises(ValueError) as error:
        read_labels(path)
    assert str(error.value).startswith(str(tmp_path / "labels.jsonl")[: -len("labels.jsonl")])
    assert message in str(error.value)
