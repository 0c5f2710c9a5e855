import hashlib
import tempfile
from io import StringIO

import onnx
import pytest
from django.core.management import CommandError, call_command

from models_registry.models import AliasMove, MLModel, ModelVersion
from models_registry.selectors import model_version_resolve
from models_registry.services import alias_move, model_get_or_create, model_version_register
from tests import onnx_factories
from tests.conftest import model_bytes, register


def _register(name: str, content: bytes) -> ModelVersion:
    return model_version_register(model=model_get_or_create(name=name), content=content)


def test_it_registers_a_ready_version_with_signature_and_metadata(db):
    version = register("iris")
    assert version.status == ModelVersion.Status.READY
    assert version.number == 1
    assert version.signature["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in version.signature["outputs"]} == {
        "label": "BYTES",
        "probabilities": "FP32",
    }
    assert version.opset == 17
    assert version.producer.startswith("skl2onnx")
    assert version.labels == ["setosa", "versicolor", "virginica"]
    stored = version.file.read()
    assert hashlib.sha256(stored).hexdigest() == version.sha256
    assert version.size_bytes == len(stored)


def test_it_normalises_the_duplicate_default_opset_that_skl2onnx_writes(db):
    raw = onnx.load_from_string(model_bytes("iris"))
    raw.opset_import.append(onnx.helper.make_opsetid("", 15))
    version = _register("dup-opset", raw.SerializeToString())
    assert version.status == ModelVersion.Status.READY
    stored = onnx.load_from_string(version.file.read())
    domains = [o.domain for o in stored.opset_import]
    assert len(domains) == len(set(domains))


def test_it_numbers_versions_and_records_alias_moves(db, staff_user):
    first = register("iris")
    second = register("iris", aliases=["staging"])
    assert (first.number, second.number) == (1, 2)
    alias_move(model=second.model, alias="production", version=second, moved_by=staff_user)
    moves = AliasMove.objects.filter(alias__name="production").order_by("moved_at", "id")
    assert [(m.from_version_id, m.to_version_id) for m in moves] == [(None, first.pk), (first.pk, second.pk)]
    assert moves.last().moved_by == staff_user
    assert model_version_resolve(model=second.model, ref="production") == second


def test_it_resolves_latest_to_the_highest_ready_version(db):
    good = register("iris")
    _register("iris", b"not a model")
    assert model_version_resolve(model=good.model, ref="latest") == good
    assert model_version_resolve(model=good.model, ref=None) == good


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"definitely not protobuf", "Not an ONNX model"),
        (onnx_factories.external_data(), "external data"),
        (onnx_factories.foreign_domain(), "com.example.custom"),
        (onnx_factories.checker_failure(), "onnx.checker refused"),
        (onnx_factories.fails_at_run_time(), "could not run the model"),
        (onnx_factories.sequence_output(), "is not a tensor"),
        (onnx_factories.op_type_not_utf8(), "onnx.checker refused"),
        (onnx_factories.unknown_tensor_type(), "onnx.checker refused"),
    ],
    ids=["garbage", "external-data", "foreign-domain", "checker", "runtime", "sequence-output", "not-utf8", "bad-type"],
)
def test_it_keeps_a_failed_version_with_a_readable_reason(db, content, reason):
    version = _register("broken", content)
    assert version.status == ModelVersion.Status.FAILED
    assert reason in version.failure_reason


def test_a_model_that_fails_on_its_sample_input_says_why_in_onnx_runtimes_words(db):
    """The reason was the last traceback line cut at 500 characters: an exception class path and a C++
    source location and signature came first, and ORT's own explanation was cut off before its shapes."""
    version = _register("broken", onnx_factories.fails_at_run_time())

    reason = version.failure_reason
    assert reason.startswith("ONNX Runtime could not run the model on a sample input (1 row): Non-zero status code")
    assert (
        "The input tensor cannot be reshaped to the requested shape. Input shape:{1,2}, requested shape:{3}" in reason
    )
    assert "onnxruntime_src" not in reason and "pybind11" not in reason and "was false" not in reason


def test_a_model_with_an_element_type_we_cannot_serve_names_that_type(db):
    """The reason said "has an unsupported element type 16": ONNX's enum number, not its name."""
    version = _register("bf16", onnx_factories.bfloat16_input())

    assert version.status == ModelVersion.Status.FAILED
    assert "Input 'x' has element type BFLOAT16, which cannot be served" in version.failure_reason
    assert "(served: BOOL, DOUBLE, FLOAT, FLOAT16, INT16," in version.failure_reason  # what can be, in ONNX's words


def test_it_accepts_and_serves_a_model_whose_dynamic_dimensions_must_be_wider_than_one(db, api):
    """The validation sample (and the serving warm-up) made every dynamic dimension past the first 1: a 3x3
    convolution on a dynamic-size image failed validation ("Invalid input shape: {1,1}")."""
    version = _register("edges", onnx_factories.conv_dynamic_height_width())
    assert version.status == ModelVersion.Status.READY, version.failure_reason

    image = [[[[1.0] * 4] * 4]]  # one 1 x 4 x 4 image
    response = api.post_json("/v1/models/edges/versions/1:predict", {"inputs": {"image": image}})

    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == [[[[9.0, 9.0], [9.0, 9.0]]] * 2]


@pytest.mark.parametrize(
    ("factory", "row", "expected"),
    [
        (onnx_factories.numbers_as_text, {"text": ["2.5"]}, [2.5]),
        (onnx_factories.integer_ratio, {"total": [7], "count": [2]}, [3]),
    ],
    ids=["numbers-as-text", "integer-ratio"],
)
def test_it_accepts_a_model_that_fails_only_on_some_values_of_its_generated_sample(db, api, factory, row, expected):
    """The sample was random 0/1 integers and the text "a": a model that parses numbers sent as text, or
    divides by an integer input, failed validation ("stod", "Integer division by zero") though it serves
    every value a client would send it."""
    version = _register("picky", factory())
    assert version.status == ModelVersion.Status.READY, version.failure_reason

    response = api.post_json("/v1/models/picky/versions/1:predict", {"instances": [row]})

    assert response.status_code == 200, response.content
    assert response.json()["predictions"] == [expected]


def test_it_refuses_a_model_over_the_size_cap(db, settings):
    settings.MODEL_MAX_BYTES = 100
    version = _register("big", model_bytes("iris"))
    assert version.status == ModelVersion.Status.FAILED
    assert "over the 100-byte cap" in version.failure_reason


def test_it_allows_a_foreign_domain_listed_in_settings_past_the_static_checks(db, settings):
    settings.MODEL_ALLOWED_EXTRA_DOMAINS = ["com.example.custom"]
    version = _register("custom", onnx_factories.foreign_domain())
    # Static checks pass; ONNX Runtime has no such op, so the sandbox run refuses it instead.
    assert "could not run the model" in version.failure_reason
    assert tempfile.gettempdir() not in version.failure_reason  # the sandbox's file, not this host's path
    assert "model.onnx" in version.failure_reason


def test_it_fails_a_model_that_exceeds_the_sandbox_memory_limit(db, settings):
    settings.MODEL_VALIDATION_MEMORY_BYTES = 64 * 1024 * 1024
    version = _register("hungry", model_bytes("iris"))
    assert version.status == ModelVersion.Status.FAILED
    assert "could not run the model" in version.failure_reason


def test_the_register_model_command_registers_and_aliases(db, tmp_path):
    path = tmp_path / "iris.onnx"
    path.write_bytes(model_bytes("iris"))
    out = StringIO()
    call_command("register_model", "cmd-iris", str(path), "--alias", "production", stdout=out)
    assert "cmd-iris v1 is ready" in out.getvalue()
    version = ModelVersion.objects.get(model__name="cmd-iris")
    assert [a.name for a in version.aliases.all()] == ["production"]


def test_the_register_model_command_fails_loudly_on_a_bad_file(db, tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"nope")
    with pytest.raises(CommandError, match="failed validation"):
        call_command("register_model", "bad", str(path))


def test_the_register_model_command_refuses_an_empty_file_and_creates_nothing(db, tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(CommandError, match="is empty"):
        call_command("register_model", "empty", str(path))
    assert not MLModel.objects.filter(name="empty").exists()


def test_the_register_model_command_refuses_a_bad_alias_and_creates_no_model(db, tmp_path):
    path = tmp_path / "iris.onnx"
    path.write_bytes(model_bytes("iris"))
    with pytest.raises(CommandError, match="reserved"):
        call_command("register_model", "new-iris", str(path), "--alias", "latest")
    assert not MLModel.objects.filter(name="new-iris").exists()


def test_the_register_model_command_adds_a_version_to_a_private_model_without_its_owner_named_again(
    private_model, tmp_path
):
    path = tmp_path / "iris.onnx"
    path.write_bytes(model_bytes("iris"))
    out = StringIO()
    call_command("register_model", "secret-iris", str(path), stdout=out)
    assert "secret-iris v2 is ready" in out.getvalue()
    assert MLModel.objects.get(name="secret-iris").organisation == private_model.model.organisation


@pytest.mark.parametrize(
    ("original", "corrupt", "reason"),
    [
        (b"setosa", b"set\xffsa", "class labels"),
        (b"probabilities", b"probabilitie\xff", "Output"),
    ],
    ids=["class-label", "output-name"],
)
def test_it_keeps_a_model_whose_names_are_not_utf8_as_failed(db, original, corrupt, reason):
    """protobuf hands such strings over as bytes: the labels crashed validation (a 500, the version left
    'validating'), and an output name reached the signature as bytes."""
    version = _register("corrupt", model_bytes("iris").replace(original, corrupt))
    assert version.status == ModelVersion.Status.FAILED
    assert reason in version.failure_reason
    assert "not UTF-8" in version.failure_reason


def test_it_registers_a_model_whose_producer_is_not_utf8_with_a_readable_producer(db):
    version = _register("odd-producer", model_bytes("iris").replace(b"skl2onnx", b"skl2onn\xff"))
    assert version.status == ModelVersion.Status.READY, version.failure_reason
    assert version.producer == "skl2onn\ufffd 1.20.0"


def test_it_keeps_a_model_with_an_op_domain_that_is_not_utf8_as_failed(db):
    """Normalising its duplicate opset entries met the domain's bytes first: a 500, 'validating' forever."""
    raw = onnx.load_from_string(model_bytes("iris"))
    raw.opset_import.extend([onnx.helper.make_opsetid("QQQQ", 1), onnx.helper.make_opsetid("QQQQ", 2)])
    version = _register("odd-domain", raw.SerializeToString().replace(b"QQQQ", b"\xff\xfe\xfd\xfc"))
    assert version.status == ModelVersion.Status.FAILED
    assert "not UTF-8" in version.failure_reason


@pytest.mark.parametrize("name", ["iris\n", "iris\r\n"])
def test_the_register_model_command_refuses_a_name_with_a_trailing_newline(db, tmp_path, name):
    path = tmp_path / "m.onnx"
    path.write_bytes(model_bytes("iris"))
    with pytest.raises(CommandError, match="not a valid model name"):
        call_command("register_model", name, str(path), stdout=StringIO())
    assert not MLModel.objects.exists()


def test_the_register_model_command_refuses_an_alias_with_a_trailing_newline(db, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(model_bytes("iris"))
    with pytest.raises(CommandError, match="not a valid alias"):
        call_command("register_model", "iris", str(path), "--alias", "prod\n", stdout=StringIO())
    assert not MLModel.objects.exists()
