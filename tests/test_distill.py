"""Knowledge distillation: students, soft targets, the control twin, ONNX teachers, composition and errors."""

import copy

import pytest
import torch

from core.io.data import Dataset, Split, load_data
from core.errors import BadInputError, UnsupportedModelError
from core.io.graph import Model
from core.io.model import export_onnx
from core.pipeline.run import run
from core.spec.recipe import DistillConfig, PruneConfig, QuantizeConfig, Recipe, Variant
from core.techniques import Cancelled
from core.techniques.distill import accuracy, model_inputs, param_count

from step_support import apply_to_copy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _distill(config, model, data, *, onnx_only=False, **context_args):
    return apply_to_copy(config, model, data, onnx_only=onnx_only, variant_name="student", **context_args)


def _eval_accuracy(module, model, data):
    return accuracy(module, model_inputs(data.eval, [s.name for s in model.inputs]), data.eval.y)


def test_distilled_student_beats_a_barely_trained_one(digits_mlp, digits_mlp_data):
    """A width-0.25 student distilled for 8 epochs is far more accurate than the same student after 1 epoch."""
    trained, _ = _distill(DistillConfig(width=0.25, epochs=8), digits_mlp, digits_mlp_data)
    weak, _ = _distill(DistillConfig(width=0.25, epochs=1), digits_mlp, digits_mlp_data)
    strong_acc = _eval_accuracy(trained.torch_module, digits_mlp, digits_mlp_data)
    weak_acc = _eval_accuracy(weak.torch_module, digits_mlp, digits_mlp_data)
    assert strong_acc > 0.85 and strong_acc > weak_acc + 0.2
    info = trained.info
    assert info["teacher_params"] == param_count(digits_mlp.torch_module) == 50826
    assert info["student_params"] == param_count(trained.torch_module) < info["teacher_params"] / 7
    assert trained.torch_module.net[1].out_features == 64  # 256 hidden units at width 0.25
    curve = info["train_curve"]
    assert [p["epoch"] for p in curve] == list(range(1, 9)) and curve[-1]["loss"] < curve[0]["loss"]
    assert curve[-1]["eval_accuracy"] == pytest.approx(strong_acc, abs=1e-6)
    assert trained.onnx_model is None and trained.architecture == "digits-mlp"


def test_distillation_is_seeded_and_reports_every_epoch(digits_mlp, digits_mlp_data):
    """Same seed, same student; one progress report per epoch; a stop request raises Cancelled."""
    reports = []
    first, _ = _distill(DistillConfig(width=0.25, epochs=2), digits_mlp, digits_mlp_data,
                        report=lambda m, f: reports.append((m, f)))
    second, _ = _distill(DistillConfig(width=0.25, epochs=2), digits_mlp, digits_mlp_data)
    for a, b in zip(first.torch_module.state_dict().values(), second.torch_module.state_dict().values()):
        assert torch.equal(a, b)
    epochs = [f for m, f in reports if "epoch" in m]
    assert epochs == [0.5, 1.0]
    with pytest.raises(Cancelled):
        _distill(DistillConfig(width=0.25, epochs=2), digits_mlp, digits_mlp_data, should_stop=lambda: True)


def test_control_twin_starts_from_the_same_weights(digits_mlp, digits_mlp_data):
    """With alpha 0 distillation is label training, so the control twin (same init, epochs) ends identical."""
    student, context = _distill(DistillConfig(width=0.25, epochs=2, alpha=0.0, control=True), digits_mlp,
                                digits_mlp_data)
    [(name, control, steps)] = context.extra_variants
    assert name == "student (control)"
    assert steps == [{**DistillConfig(width=0.25, epochs=2).to_dict(), "alpha": 0.0, "control": False}]
    for a, b in zip(student.torch_module.state_dict().values(), control.torch_module.state_dict().values()):
        assert torch.allclose(a, b)
    assert len(control.info["train_curve"]) == 2 and control.info["student_params"] == 6570


def test_onnx_teacher_distills_into_a_template_student(digits_cnn, digits_cnn_data):
    """Without torch weights the teacher runs in onnxruntime and the student is a CNN template, ~width^2 the
    teacher's size."""
    result, _ = _distill(DistillConfig(width=0.25, epochs=4), digits_cnn, digits_cnn_data, onnx_only=True)
    info = result.info
    assert "CNN template" in info["student"] and info["teacher_params"] == 159626
    assert 0.02 * 159626 < info["student_params"] <= 0.0625 * 159626
    assert _eval_accuracy(result.torch_module, digits_cnn, digits_cnn_data) > 0.8


def test_without_labels_distillation_uses_soft_targets_only(digits_mlp):
    """Synthetic inputs are still inputs: the student learns the teacher's outputs (alpha treated as 1)."""
    synthetic = load_data(None, digits_mlp)
    result, _ = _distill(DistillConfig(width=0.5, epochs=6, control=True), digits_mlp, synthetic)
    assert any("soft targets only" in n for n in result.notes)
    assert any("no control" in n for n in result.notes)
    curve = result.info["train_curve"]
    assert curve[-1]["loss"] < 0.5 * curve[0]["loss"] and curve[-1]["eval_accuracy"] is None
    x = torch.from_numpy(synthetic.eval.first)
    with torch.no_grad():
        agree = (result.torch_module(x).argmax(1) == digits_mlp.torch_module(x).argmax(1)).float().mean()
    assert agree > 0.5


def test_empty_train_split_is_bad_input(digits_mlp, digits_mlp_data):
    """No training samples: a clear BadInputError, not a crash."""
    empty = Split({"input": digits_mlp_data.train.first[:0]}, digits_mlp_data.train.y[:0])
    data = Dataset("empty", empty, digits_mlp_data.calib, digits_mlp_data.eval)
    with pytest.raises(BadInputError, match="train split is empty"):
        _distill(DistillConfig(epochs=1), digits_mlp, data)


def test_non_classifier_is_unsupported(digits_mlp, digits_mlp_data):
    """A model whose output is an embedding cannot be distilled with soft targets; the error says why."""
    module = copy.deepcopy(digits_mlp.torch_module)
    proto = export_onnx(module, torch.zeros(1, 1, 8, 8), output_name="sentence_embedding")
    model = Model("encoder", proto, module, architecture="digits-mlp")
    with pytest.raises(UnsupportedModelError, match="needs a classifier"):
        _distill(DistillConfig(epochs=1), model, digits_mlp_data)


def test_distill_and_prune_compose_with_quantize_in_the_pipeline(tmp_path, digits_cnn, digits_cnn_data,
                                                                 fast_bench):
    """distill -> int8 and prune -> distill -> int8 build as variants; the control twin is its own variant."""
    recipe = Recipe(model="sample:digits-cnn", data="sample:digits", benchmark=fast_bench, variants=(
        Variant("student", (DistillConfig(width=0.25, epochs=3, lr=1e-2, control=True),
                            QuantizeConfig(mode="static"))),
        Variant("pruned-student", (PruneConfig(method="structured", amount=0.5, finetune_epochs=0),
                                   DistillConfig(width=0.5, epochs=1), QuantizeConfig(mode="static"))),
    ))
    result = run(digits_cnn, digits_cnn_data, recipe, tmp_path)
    names = [v.name for v in result.variants]
    assert names == ["baseline", "student", "student (control)", "pruned-student"]
    assert all(v.status == "ok" for v in result.variants), [v.error for v in result.variants]
    base, student, control, pruned = result.variants
    assert student.info["quantized_nodes"] and student.params < base.params / 10
    assert student.accuracy > 0.7 and student.info["student_params"] == 10346  # measured 0.83
    assert control.steps[0]["alpha"] == 0.0 and control.info["control_of"] == "student"
    assert control.params == student.params and (tmp_path / control.artifact).is_file()
    assert pruned.info["teacher_params"] == 159626  # the teacher is the baseline, not the pruned candidate
    assert pruned.info["student"] == "digits-cnn at width 0.5" and "params_after" not in pruned.info
    assert any("replaced" in n for n in pruned.notes)
