"""Packed linears: same results as nn.Linear, each row count's kernel really taken, packed copies kept in sync."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_model
from medusa_runtime.layout import (KERNELS_ENV, TABLE_ROWS, PackedLinear, format_kernel_table, kernel_table, mkl_packing_available,
                                   onednn_packing_available, pack_linears, parse_kernel_table, prepare_kernels)

pytestmark = pytest.mark.skipif(not onednn_packing_available(), reason="PyTorch built without oneDNN")


def packed_copy(linear: nn.Linear) -> PackedLinear:
    return PackedLinear.from_linear(linear)


@pytest.mark.parametrize("rows", [1, 2, 5, 32, 33, 200])
def test_packed_linear_matches_linear(rows):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80)
    packed = packed_copy(linear)
    x = torch.randn(1, rows, 48)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        # a non-contiguous input (a transposed view) gives the same result
        xt = torch.randn(48, rows).t()
        torch.testing.assert_close(packed(xt), linear(xt), rtol=1e-5, atol=1e-5)


@pytest.fixture
def kernels(monkeypatch):
    """Set MEDUSA_LINEAR_KERNELS for one test (None: unset); the cached table is cleared before and after."""
    def set_to(value: str | None):
        if value is None:
            monkeypatch.delenv(KERNELS_ENV, raising=False)
        else:
            monkeypatch.setenv(KERNELS_ENV, value)
        kernel_table.cache_clear()
    yield set_to
    monkeypatch.undo()
    kernel_table.cache_clear()


def spy_kernels(monkeypatch) -> list[tuple[str, int]]:
    """Record (kernel, rows) for every call of the packed kernels; stock F.linear calls record nothing."""
    calls = []
    onednn, mkl = PackedLinear._onednn_linear, PackedLinear._mkl_linear
    monkeypatch.setattr(PackedLinear, "_onednn_linear", staticmethod(lambda x, *a: calls.append(("onednn", x.numel() // x.shape[-1])) or onednn(x, *a)))
    if mkl is not None:
        monkeypatch.setattr(PackedLinear, "_mkl_linear", staticmethod(lambda x, *a: calls.append(("mkl", x.numel() // x.shape[-1])) or mkl(x, *a)))
    return calls


@pytest.mark.skipif(not mkl_packing_available(), reason="PyTorch built without MKL")
def test_each_row_count_takes_its_tables_kernel_without_autograd_only(monkeypatch, kernels):
    kernels("1:stock,2-3:onednn,4-8:mkl")
    torch.manual_seed(0)
    linear = nn.Linear(16, 24)
    packed = packed_copy(linear)
    calls = spy_kernels(monkeypatch)
    rows = (1, 2, 3, 4, 8, 9, 33)
    with torch.inference_mode():
        for n in rows:
            x = torch.randn(n, 16)
            torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed(torch.randn(1, 4, 16)).shape, (1, 4, 24))  # rows count across leading dims
    assert calls == [("onednn", 2), ("onednn", 3), ("mkl", 4), ("mkl", 8), ("onednn", 9), ("onednn", 33), ("mkl", 4)]
    assert sorted(packed._mkl_packs) == [4, 8]  # one MKL pack per row count, made on first use and kept
    with torch.enable_grad():  # training falls back to autograd-capable F.linear
        packed(torch.randn(4, 16, requires_grad=True)).sum().backward()
    assert len(calls) == 7


@pytest.mark.skipif(not mkl_packing_available(), reason="PyTorch built without MKL")
def test_mkl_packs_stay_under_the_memory_budget_and_give_it_back(monkeypatch, kernels):
    from medusa_runtime import layout

    kernels("1-8:mkl")
    packed = packed_copy(nn.Linear(16, 24, bias=False))
    weight_bytes = 16 * 24 * 4
    budget = layout._MklPackBudget.held + 2 * weight_bytes  # room for two packs
    monkeypatch.setattr(layout, "mkl_pack_budget_bytes", lambda: budget)
    calls = spy_kernels(monkeypatch)
    with torch.inference_mode():
        for n in (2, 3, 4, 2):
            x = torch.randn(n, 16)
            torch.testing.assert_close(packed(x), F.linear(x, packed.weight), rtol=1e-5, atol=1e-5)
    assert calls == [("mkl", 2), ("mkl", 3), ("onednn", 4), ("mkl", 2)]  # the third pack is over budget: oneDNN
    held = layout._MklPackBudget.held
    packed.repack()  # the packs are dropped (as after an in-place edit) and their bytes given back
    assert layout._MklPackBudget.held == held - 2 * weight_bytes


@pytest.mark.skipif(not mkl_packing_available(), reason="PyTorch built without MKL")
def test_in_place_weight_edit_is_followed_by_the_mkl_pack(kernels):
    kernels("mkl")
    linear = packed_copy(nn.Linear(16, 24))
    x = torch.randn(3, 16)
    with torch.inference_mode():
        linear(x)  # the 3-row pack is made
    with torch.no_grad():  # what an optimizer step does
        linear.weight.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)


def test_kernel_table_is_measured_once_per_machine_or_read_from_the_environment(kernels, monkeypatch, tmp_path):
    from medusa_runtime import layout

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    table = parse_kernel_table("1-2:stock,3-8:onednn", "test")
    monkeypatch.setattr(layout, "measure_kernel_table", lambda: measured.append(1) or table)
    kernels(None)
    assert kernel_table() == table and measured == [1]
    assert json.loads(layout.kernel_cache_file().read_text()) == {layout.machine_key(): "1-2:stock,3-8:onednn"}
    kernel_table.cache_clear()  # a new process on the same machine reads the file
    assert kernel_table() == table and measured == [1]
    for unreadable in ("{not json", json.dumps({layout.machine_key(): 3})):  # garbage; an older layout's entry
        layout.kernel_cache_file().write_text(unreadable)
        kernel_table.cache_clear()
        assert kernel_table() == table and measured[-1] == 1  # measured again and rewritten
        assert json.loads(layout.kernel_cache_file().read_text()) == {layout.machine_key(): "1-2:stock,3-8:onednn"}
    assert len(measured) == 3
    kernels("stock")
    assert kernel_table()[1:] == ("stock",) * TABLE_ROWS and layout.kernel_for(TABLE_ROWS + 1) == "onednn"
    kernels("2:stock")  # row counts left out take oneDNN
    assert kernel_table()[1:4] == ("onednn", "stock", "onednn")
    for bad, says in (("fast", "kernel 'fast' is unknown"), ("0-3:stock", "outside 1..8"), ("1-9:mkl", "outside 1..8"),
                      ("x:stock", "no row count"), ("", "kernel '' is unknown")):
        kernels(bad)
        with pytest.raises(ValueError, match=f"{KERNELS_ENV}=.*{says}.*use one of stock"):
            kernel_table()


@pytest.mark.parametrize("table", ["1:stock,2:mkl,3:stock,4-8:onednn", "1-8:stock", "1-7:onednn,8:mkl"])
def test_kernel_table_text_round_trips(table):
    assert format_kernel_table(parse_kernel_table(table, "test")) == table


def test_measurement_names_a_kernel_per_row_count():
    from medusa_runtime.layout import available_kernels, measure_kernel_table

    table = measure_kernel_table(layers=1, repeats=1, rows_range=range(1, 4))
    assert len(table) == TABLE_ROWS + 1 and set(table[1:4]) <= set(available_kernels())


def test_pack_linears_keeps_model_outputs_state_dict_and_tied_weights():
    model = tiny_model("llama")
    model.config.tie_word_embeddings = True
    model.get_output_embeddings().weight = model.get_input_embeddings().weight
    keys = list(model.state_dict())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        before = model(ids).logits
    swapped = pack_linears(model)
    assert swapped == 2 * 7 + 1  # 7 linears per layer, 2 layers, and the lm_head
    assert all(type(m) is not nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert list(model.state_dict()) == keys
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)


def test_packed_copy_follows_load_state_dict_and_dtype_changes():
    torch.manual_seed(1)
    packed = packed_copy(nn.Linear(8, 8))
    other = nn.Linear(8, 8)
    packed.load_state_dict(other.state_dict())
    x = torch.randn(4, 8)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), other(x))
    packed.double()
    assert packed._packed is None  # not fp32: stock F.linear
    with torch.inference_mode():
        torch.testing.assert_close(packed(x.double()), other.double()(x.double()))
    packed.float()
    assert packed._packed is not None


def test_in_place_weight_edit_is_followed_by_the_packed_copy():
    linear = packed_copy(nn.Linear(16, 24))
    x = torch.randn(3, 16)
    with torch.no_grad():  # what an optimizer step does
        linear.weight.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)


def test_a_packed_linear_over_an_inference_tensor_works():
    """The heads build their draft-vocabulary linear inside decoding's inference mode."""
    with torch.inference_mode():
        weight = torch.randn(24, 16)  # an inference tensor: no version counter
        linear = nn.Linear(16, 24, bias=False, device="meta")
        linear.weight = nn.Parameter(weight, requires_grad=False)
        packed = packed_copy(linear)
        x = torch.randn(3, 16)
        torch.testing.assert_close(packed(x), F.linear(x, weight), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not mkl_packing_available(), reason="PyTorch built without MKL")
def test_prepare_kernels_makes_the_mkl_packs_of_the_row_counts_ahead(kernels):
    kernels("1:stock,2-3:onednn,4-8:mkl")
    model = tiny_model("llama")
    pack_linears(model)
    prepare_kernels(model, [2, 4, 6, 12])  # only 4 and 6 take MKL's kernel
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert packed and all(sorted(m._mkl_packs) == [4, 6] for m in packed)


@pytest.mark.skipif(not mkl_packing_available(), reason="PyTorch built without MKL")
def test_the_decoders_prefill_packs_every_row_count_its_batch_can_shrink_to(kernels):
    from medusa_runtime.decoding import MedusaDecoder
    from medusa_runtime.spec import TreeSpec

    kernels("1:stock,2-3:onednn,4-8:mkl")
    model = tiny_model("llama")
    pack_linears(model)
    decoder = MedusaDecoder(model, None, TreeSpec([]), eos_token_ids=())
    decoder.prefill([[5, 6, 7], [8, 9], [10, 11, 12, 13], [5, 5], [6, 6, 6]], 4)  # 5 rows of 1 token: 1..5 rows
    lm_head = model.get_output_embeddings()
    assert sorted(lm_head._mkl_packs) == [4, 5]
