import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_profile():
    """The torch-free profile of the tiny Llama test architecture."""
    from autopeft.core.model_profile import profile_from_config
    from autopeft.train.models import tiny_config

    return profile_from_config(json.loads(tiny_config("tiny-llama").to_json_string()))


@pytest.fixture(scope="module")
def postgres_url():
    """$AUTOPEFT_TEST_POSTGRES (CI starts one) or a server started by scripts/postgres.sh."""
    import contextlib

    from bench import faults

    stack = contextlib.ExitStack()
    try:
        url = stack.enter_context(faults.postgres(os.environ.get("AUTOPEFT_TEST_POSTGRES")))
    except RuntimeError as err:
        pytest.fail(f"{err}; install it with scripts/postgres.sh install")
    with stack:
        yield url
