"""Loading the base model and attaching peft print nothing a user cannot act on."""

from __future__ import annotations

import warnings

from transformers.utils import logging as hf_logging

from autopeft.train.build import build_adapted
from autopeft.train.models import load_model
from autopeft.train.profile_model import profile_model

from .trial_helpers import LORA


def test_the_base_model_loads_without_the_load_report_and_restores_logging(capfd):
    hf_logging.set_verbosity_warning()
    model = load_model("minilm", num_labels=2)
    out = capfd.readouterr()
    assert "LOAD REPORT" not in out.out + out.err  # the new head is expected, not news
    assert "Loading weights" not in out.err
    assert hf_logging.get_verbosity() == hf_logging.WARNING
    assert hf_logging.is_progress_bar_enabled()
    assert model.classifier.out_features == 2


def test_attaching_a_peft_method_raises_no_future_warning():
    model = load_model("tiny-bert", num_labels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        adapted = build_adapted(model, profile_model(model), LORA, total_steps=10)
    assert adapted.trainable_params > 0
