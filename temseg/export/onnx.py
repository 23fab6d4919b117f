"""ONNX export of a trained temseg model.

The exported graph maps ``image`` (B, 1, H, W) float32 normalised tiles to ``scores``
(B, C, H, W) float32 (logits, or probabilities with ``softmax=True``), with B, H and W dynamic
(H and W multiples of the network's ``tile_multiple``, 8 for depth 3). It is produced by the
dynamo-based ``torch.onnx.export`` (opset 18 by default, >= 17), with

* the Triton/fused ops replaced by their explicit PyTorch references (attention as
  MatMul/Softmax/MatMul, see :func:`reference_ops`), so every op is a plain ONNX op that
  TensorRT's ONNX parser and ONNX Runtime both implement;
* no dynamic padding: with H and W symbolic multiples of ``2**depth`` the network's
  pad-to-a-multiple branch is provably dead and is not traced (checked: no ``Pad`` node);
* constant folding and simplification: onnxscript's optimiser during export, then
  onnx-graphsurgeon's ``fold_constants`` + ``cleanup`` + ``toposort`` (what ``polygraphy
  surgeon sanitize --fold-constants`` does), falling back to onnxscript's optimiser alone
  when onnx-graphsurgeon is not installed;
* the normalisation, class table, tile size and pixel size stored in ``metadata_props``
  (:mod:`temseg.spec`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..spec import INPUT_NAME, OUTPUT_NAME, ModelSpec, flat_metadata

__all__ = [
    "DEFAULT_OPSET",
    "ExportWrapper",
    "export_onnx",
    "onnx_op_types",
    "reference_ops",
    "sanitize",
]

log = logging.getLogger("temseg.export")

DEFAULT_OPSET = 18  # the dynamo exporter's native opset; 17 goes through the version converter
MIN_OPSET = 17


@contextlib.contextmanager
def reference_ops(attention: str = "math") -> Iterator[None]:
    """Replace the fused/Triton ops used by the models with their PyTorch references.

    Args:
        attention: "math" (explicit ``softmax(q k^T * scale) v``: MatMul/Softmax/MatMul in
            ONNX, what TensorRT fuses into its own MHA kernels) or "sdpa"
            (``F.scaled_dot_product_attention``, the eager CPU path; used for AOTInductor).
    """
    from ..kernels import attention_math, attention_reference
    from ..models import blocks

    ref = {"math": attention_math, "sdpa": attention_reference}[attention]
    saved = blocks.attention
    blocks.attention = ref
    try:
        yield
    finally:
        blocks.attention = saved


class ExportWrapper(nn.Module):
    """The exported function: (B, 1, H, W) float32 -> (B, C, H, W) float32.

    ``dtype`` float16/bfloat16 runs the network in that precision between a cast of the
    input and a cast of the output back to float32 (a strongly typed reduced-precision graph
    for TensorRT); ``softmax`` appends a softmax over the classes.
    """

    def __init__(self, model: nn.Module, softmax: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        net = getattr(model, "net", model)
        self.net = getattr(net, "_orig_mod", net)
        self.softmax = softmax
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image if self.dtype == torch.float32 else image.to(self.dtype)
        y = self.net(x)
        if self.softmax:
            y = torch.softmax(y, dim=1)
        return y if y.dtype == torch.float32 else y.float()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's INFO chatter (and torchvision-missing warnings) off the console."""
    names = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def sanitize(model: Any) -> Any:
    """Constant-fold and clean an ``onnx.ModelProto`` (returns a new one).

    onnx-graphsurgeon: ``fold_constants`` (evaluates constant subgraphs with ONNX Runtime) +
    ``cleanup`` + ``toposort``, repeated until the node count stops changing. Without
    onnx-graphsurgeon, onnxscript's optimiser (constant folding + dead code elimination).
    """
    try:
        import onnx_graphsurgeon as gs
    except ImportError:
        import onnxscript.optimizer

        log.info("onnx-graphsurgeon not installed: folding constants with onnxscript")
        return onnxscript.optimizer.optimize(model)
    import onnx

    graph = gs.import_onnx(model)
    n_before = -1
    while len(graph.nodes) != n_before:
        n_before = len(graph.nodes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph.fold_constants().cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    return onnx.shape_inference.infer_shapes(out)


def onnx_op_types(model: Any) -> set[tuple[str, str]]:
    """(domain, op_type) of every node, subgraphs included ("" is the default domain)."""
    found: set[tuple[str, str]] = set()

    def walk(graph: Any) -> None:
        for node in graph.node:
            found.add((node.domain or "", node.op_type))
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return found


def _name_dims(model: Any) -> None:
    """Name the dynamic input/output dims batch/height/width (clearer in Netron, trtexec)."""
    for vi in (*model.graph.input, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for i, name in ((0, "batch"), (2, "height"), (3, "width")):
            if dims[i].HasField("dim_param") or not dims[i].HasField("dim_value"):
                dims[i].ClearField("dim_value")
                dims[i].dim_param = name


def _trace(wrapper: nn.Module, path: Path, tile: int, multiple: int, opset: int,
           max_tile: int, max_batch: int) -> Any:
    """The dynamo ONNX export of ``wrapper`` traced on a (2, 1, tile, tile) sample, batch and
    tile sides symbolic (multiples of ``multiple``); RuntimeError naming ``path``."""
    sample = torch.zeros(2, 1, tile, tile)
    dim = torch.export.Dim
    dynamic_shapes = {INPUT_NAME: {
        0: dim("batch", min=1, max=max_batch),
        2: multiple * dim("h_blocks", min=1, max=max_tile // multiple),
        3: multiple * dim("w_blocks", min=1, max=max_tile // multiple),
    }}
    with reference_ops("math"), torch.no_grad(), warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                wrapper, (sample,), None, dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes, optimize=True, external_data=False,
                verbose=False)
        except Exception as exc:
            raise RuntimeError(f"{path}: ONNX export failed: {type(exc).__name__}: "
                               f"{exc}") from exc
    return program.model_proto


def _describe(proto: Any, model: nn.Module, softmax: bool, opset: int, dtype: torch.dtype,
              multiple: int) -> None:
    """The model's :class:`ModelSpec` as ``proto``'s metadata, its producer and doc string."""
    import onnx

    del proto.metadata_props[:]
    info = ModelSpec.from_model(
        model, softmax=softmax, opset=opset, dtype=str(dtype).removeprefix("torch."),
        torch_version=torch.__version__, exporter="torch.onnx.export(dynamo=True)")
    onnx.helper.set_model_props(proto, flat_metadata(info))
    proto.producer_name = "temseg"
    proto.doc_string = (f"temseg segmentation model: {INPUT_NAME} (B,1,H,W) float32 normalised "
                        f"tiles -> {OUTPUT_NAME} (B,C,H,W) float32 "
                        f"{'probabilities' if softmax else 'logits'}; H, W multiples of "
                        f"{multiple}")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    softmax: bool = False,
    opset: int = DEFAULT_OPSET,
    dtype: torch.dtype = torch.float32,
    sample_tile: int | None = None,
    max_tile: int = 4096,
    max_batch: int = 1024,
    simplify: bool = True,
    check: bool = True,
) -> Path:
    """Export ``model`` (a :class:`temseg.SegmentationModel`) to a single ONNX file.

    Args:
        model: the trained model (any device; exported on the CPU from a copy in eval mode).
        path: output ``.onnx`` file (written atomically, weights inside the file).
        softmax: embed a softmax over the classes (output probabilities instead of logits).
        opset: ONNX opset, >= 17.
        dtype: float32 (default), float16 or bfloat16 network precision (I/O stay float32).
        sample_tile: tile side used for tracing (default: the model's patch size rounded to
            the tile multiple); the exported graph accepts any multiple of the tile multiple.
        max_tile, max_batch: upper bounds recorded for the symbolic dims.
        simplify: run :func:`sanitize` (constant folding + cleanup).
        check: run ``onnx.checker`` (full check with shape inference) on the result.

    Returns:
        ``path`` as a Path. Raises ValueError for an unsupported opset / dtype and
        RuntimeError naming the model when the export fails.
    """
    import copy

    import onnx

    from ..atomic import atomic_path

    path = Path(path)
    if opset < MIN_OPSET:
        raise ValueError(f"{path}: opset {opset} requested, temseg exports opset >= {MIN_OPSET}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"{path}: dtype must be float32, float16 or bfloat16, got {dtype}")
    net = getattr(getattr(model, "net", model), "_orig_mod", getattr(model, "net", model))
    multiple = int(getattr(net, "multiple", 8))
    patch = int(getattr(model, "patch_size", 256))
    tile = sample_tile or max(multiple, (patch // multiple) * multiple)
    if tile % multiple:
        raise ValueError(f"sample_tile {tile} is not a multiple of {multiple}")

    wrapper = ExportWrapper(copy.deepcopy(net).cpu().eval(), softmax, dtype).to(dtype)
    wrapper.dtype = dtype
    proto = _trace(wrapper, path, tile, multiple, opset, max_tile, max_batch)
    if simplify:
        with _quiet_exporter():
            proto = sanitize(proto)
    _name_dims(proto)
    _describe(proto, model, softmax, opset, dtype, multiple)
    ops = {op for dom, op in onnx_op_types(proto) if dom == ""}
    if "Pad" in ops:
        raise RuntimeError(f"{path}: exported graph contains a Pad node (tile padding was "
                           "traced); tiles must be multiples of the tile multiple")
    if check:
        onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path
