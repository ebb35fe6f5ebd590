"""Registry: decorators, origins, generated configs, refusals and messages."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from torch import Tensor, nn

import genkit
from genkit.errors import DuplicatePartError, PartDefinitionError, UnknownPartError
from genkit.registry import KINDS, list_parts, register_encoder, registry


class Identity(genkit.Encoder):
    def __init__(self, spec: genkit.DataSpec, *, width: int = 4) -> None:
        super().__init__()
        self.out_features = spec.numel
        self.width = width

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x.flatten(1)


class OtherIdentity(Identity):
    pass


@pytest.fixture
def clean_encoders():
    """Undo what a test registers (registry and ConfigStore), so tests stay independent."""
    before = dict(registry("encoder").entries)
    store = ConfigStore.instance().repo["encoder"]
    stored = dict(store)
    yield
    registry("encoder").entries.clear()
    registry("encoder").entries.update(before)
    store.clear()
    store.update(stored)


def test_every_kind_has_its_builtins():
    names = {kind: registry(kind).names() for kind in KINDS}
    assert {"mlp", "conv"} <= set(names["encoder"]) and {"mlp", "conv"} <= set(names["decoder"])
    assert {"normal", "mog", "vamp"} <= set(names["prior"])
    assert {"bernoulli", "gaussian"} <= set(names["likelihood"])
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "image_folder"} <= set(names["data"])
    assert all(e.origin == "genkit" for e in list_parts())


def test_registration_generates_a_config_node_without_wiring(clean_encoders):
    register_encoder("identity_test")(Identity)
    entry = registry("encoder").get("identity_test")
    assert entry.parameters() == {"width": 4}
    assert entry.origin.startswith("local:") or entry.origin == "genkit"
    repo = ConfigStore.instance().repo["encoder"]
    assert "identity_test.yaml" in repo
    node = repo["identity_test.yaml"].node
    assert node["_target_"].endswith("Identity") and "spec" not in node


def test_duplicate_name_is_refused_unless_override(clean_encoders):
    with pytest.raises(DuplicatePartError, match="clashes with the one from genkit.*override=True"):
        register_encoder("mlp")(OtherIdentity)
    register_encoder("mlp", override=True)(OtherIdentity)
    assert registry("encoder").get("mlp").cls is OtherIdentity
    assert registry("encoder").get("mlp").overrides == "genkit"


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("def __init__(self, spec, width: int = 4): pass", "keyword-only"),
        ("def __init__(self, spec, *, width=4): pass", "annotated"),
        ("def __init__(self, spec, *, width: int): pass", "given a default"),
    ],
)
def test_unconfigurable_signatures_are_refused(signature, message, clean_encoders):
    namespace: dict = {}
    exec(signature, namespace)
    cls = type("Bad", (Identity,), {"__init__": namespace["__init__"]})
    with pytest.raises(PartDefinitionError, match=message):
        register_encoder("bad")(cls)


def test_classes_defined_in_functions_are_refused(clean_encoders):
    class Local(Identity):
        pass

    with pytest.raises(PartDefinitionError, match="define it at module level"):
        register_encoder("local_test")(Local)


def test_wrong_base_and_bad_names_are_refused():
    with pytest.raises(PartDefinitionError, match="must subclass genkit.parts.Encoder"):
        register_encoder("plain")(nn.Linear)
    with pytest.raises(PartDefinitionError, match="lower_snake_case"):
        register_encoder("Conv")


def test_unknown_name_lists_choices_and_suggests():
    with pytest.raises(
        UnknownPartError, match=r"no encoder named 'convv'\. Did you mean 'conv' or 'conv1d'\?.*conv, conv1d, .*genkit"
    ):
        registry("encoder").get("convv")


def test_list_parts_filters_with_wildcards():
    assert [e.name for e in list_parts("encoder", "c*")] == ["conv", "conv1d"]
    assert [e.name for e in list_parts("encoder", "conv?d")] == ["conv1d"]
    assert {e.kind for e in list_parts(pattern="mlp")} == {"encoder", "decoder"}
