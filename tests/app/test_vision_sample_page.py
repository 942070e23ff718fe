"""sample:effnet-lite1 in the dashboard: listed with the samples, chosen with its photo crops (each split's size and
resolution shown, no train split), and the Recover accuracy preset fitted to an ONNX-only network."""

from __future__ import annotations

import pytest

from app_support import errors_of

from sample_models import vision

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not vision.extra_installed(),
                                 reason="the 'vision' extra is not installed (make setup installs it)")]


def test_effnet_is_listed_chosen_with_its_photos_and_gets_the_recover_preset(make_app):
    """Using effnet-lite1 shows its card and the photos' 128 calibration / 144 validation / 240 test crops (no
    train); on Optimize, Recover accuracy builds plain and recovered int8 twins and leaves QAT out with its reason."""
    at = make_app().run()
    assert "Use effnet-lite1" in [b.label for b in at.button]
    at.button(key="use_effnet-lite1").click().run()
    assert not errors_of(at)
    caption = next(c.value for c in at.caption if "calibration" in c.value)
    assert "128 calibration · 144 validation (1 sample = 0.69 pt) · 240 test (1 sample = 0.42 pt)" in caption
    assert "train" not in caption

    at.switch_page("pages/optimize.py").run()
    at.pills(key="preset_pills").set_value("Recover accuracy").run()
    assert not errors_of(at)
    names = [v.name for v in at.session_state["fw_recipe"].variants]
    assert names == ["int8-per-tensor", "int8-per-channel", "int8-per-tensor-recovered",
                     "int8-per-channel-recovered"]
    recovered = at.session_state["fw_recipe"].variants[3].steps[0]
    assert recovered.equalize and recovered.bias_correction and recovered.weight_rounding == "learned"
    assert any("int8-qat" in m.value and "torch" in m.value for m in list(at.caption) + list(at.info)
               + list(at.warning))
