"""Step 1: load the source model (ONNX, or torch exported to ONNX by our code) -> ``source.onnx``."""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from optimodel_jobs import errors
from optimodel_contracts.artifacts import TensorSpec, sha256_file
from optimodel_contracts.jobconfig import SourceSpec
from optimodel_jobs.errors import OptimizeError


@dataclass
class Source:
    onnx_path: Path
    sha256: str  # of the file the user gave (ONNX, state dict, TorchScript or program)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    module: Any | None  # the torch module when there is one (pruning and distillation need it)
    spec: SourceSpec
    # Where the factories' modules are searched (source.codePath, the config's folder, the working
    # directory), each with why: distillation imports its student's factory from the same places.
    code_dirs: list[tuple[Path, str]] = field(default_factory=list)


def tensor_specs(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (initializers excluded) and outputs of an ONNX model, with numpy dtype names."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims: list[int | None] = [
            d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
        ]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        return TensorSpec(name=value.name, dtype=dtype, shape=dims)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def fetch(uri: str, destination: Path, what: str) -> Path:
    """Copy a file from any fsspec URI to a local path."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with fsspec.open(uri, "rb") as source, open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    except FileNotFoundError:
        raise OptimizeError(errors.SOURCE_UNREADABLE, f"{what} {uri} does not exist") from None
    except Exception as error:  # noqa: BLE001 - protocol errors vary
        raise OptimizeError(errors.SOURCE_UNREADABLE, f"{what} {uri} cannot be read: {error}") from None
    return destination


def check_onnx(path: Path, uri: str) -> None:
    """Refuse a truncated / corrupt / invalid ONNX file with a readable reason."""
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise OptimizeError(
            errors.SOURCE_UNREADABLE, f"source {uri} is truncated or not an ONNX model ({type(error).__name__}: {error})"
        ) from None
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # noqa: BLE001
        raise OptimizeError(errors.SOURCE_INVALID, f"source {uri} is not a valid ONNX model: {error}") from None
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001
        raise OptimizeError(errors.SOURCE_INVALID, f"ONNX Runtime cannot load source {uri}: {error}") from None


def code_dirs(spec: SourceSpec, config_dir: str | None, work_dir: Path) -> list[tuple[Path, str]]:
    """The folders a factory's module is searched in, in order, each with why: ``source.codePath`` (a folder,
    or the folder of a ``.py`` file; a store URI is fetched under ``work_dir``), the config file's folder, the
    working directory. The console script ``optimodel`` does not put the working directory on the import
    path the way ``python -m`` does, so without this a module next to the config is not found."""
    folders: list[tuple[Path, str]] = []
    if spec.code_path is not None:
        folders.append((_code_path_folder(spec.code_path, config_dir, work_dir), f"source.codePath {spec.code_path}"))
    if config_dir is not None:
        folders.append((Path(config_dir), "the config file's folder"))
    folders.append((Path.cwd(), "the working directory"))
    unique: list[tuple[Path, str]] = []
    for folder, why in folders:
        if all(folder.resolve() != seen.resolve() for seen, _ in unique):
            unique.append((folder, why))
    return unique


def _code_path_folder(code_path: str, config_dir: str | None, work_dir: Path) -> Path:
    protocol, path = fsspec.core.split_protocol(code_path)
    if protocol in (None, "file", "local"):
        local = Path(path)
        if not local.is_absolute():
            local = Path(config_dir or os.getcwd()) / local
        if not local.exists():
            raise OptimizeError(
                errors.FACTORY_NOT_FOUND,
                f"source.codePath {code_path} does not exist (looked at {local}); give the folder holding the "
                "factory's module or the .py file itself (a relative path is read from the config file's folder)",
            )
        return local.parent if local.is_file() else local
    # A store URI (s3://, gs://, memory:// ...): copied next to the work, as the source model is.
    target = work_dir / "code"
    try:
        fs, remote = fsspec.core.url_to_fs(code_path)
        if fs.isdir(remote):
            fs.get(remote.rstrip("/") + "/", str(target) + "/", recursive=True)
            return target
        if not fs.exists(remote):
            raise FileNotFoundError(remote)
        target.mkdir(parents=True, exist_ok=True)
        fs.get(remote, str(target / Path(remote).name))
        return target
    except FileNotFoundError:
        raise OptimizeError(errors.FACTORY_NOT_FOUND, f"source.codePath {code_path} does not exist") from None
    except Exception as error:  # noqa: BLE001 - protocol errors vary
        raise OptimizeError(errors.FACTORY_NOT_FOUND, f"source.codePath {code_path} cannot be read: {error}") from None


@contextmanager
def _on_import_path(folders: list[Path]) -> Iterator[None]:
    """The folders first on ``sys.path`` while importing, and only then: the Job's own imports are not
    shadowed afterwards by a user file that happens to share a name."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


def _forget_stale(top: str, folders: list[Path]) -> None:
    """A module of that name imported earlier from elsewhere (a previous run in the same process) would
    be returned by importlib as is; when one of the folders holds it, the earlier one is forgotten."""
    cached = sys.modules.get(top)
    if cached is None:
        return
    here = [f for f in folders if (f / f"{top}.py").is_file() or (f / top / "__init__.py").is_file()]
    origin = getattr(cached, "__file__", None)
    if not here or (origin is not None and any(Path(origin).resolve().is_relative_to(f.resolve()) for f in here)):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def import_factory(reference: str, field_name: str, folders: list[tuple[Path, str]]) -> Callable[..., Any]:
    """``"module:function"`` -> the function, its module searched first in ``folders`` (see code_dirs), then on
    the Python path. Each way it can fail is a FactoryNotFound that says where it looked and what to do."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise OptimizeError(
            errors.FACTORY_NOT_FOUND, f"{field_name} {reference!r} must look like 'module:function' (e.g. mymodels:build_mlp)"
        )
    paths = [folder for folder, _ in folders]
    top = module_name.split(".")[0]
    _forget_stale(top, paths)
    with _on_import_path(paths):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and (module_name == error.name or module_name.startswith(error.name + ".")):
                looked = "; ".join(f"{folder} ({why})" for folder, why in folders)
                raise OptimizeError(
                    errors.FACTORY_NOT_FOUND,
                    f"{field_name} {reference!r}: no module named {error.name!r} in {looked}, nor on the Python path. "
                    f"Put {top}.py (or the package {top}/) in the config file's folder, or set source.codePath to "
                    "its folder or .py file (a local path or a store URI), or install it in this environment",
                ) from None
            raise OptimizeError(
                errors.FACTORY_NOT_FOUND,
                f"{field_name} {reference!r}: {module_name} was found but imports {error.name!r}, which is not installed "
                f"here ({error})",
            ) from None
        except Exception as error:  # noqa: BLE001 - the user's module may fail in any way while importing
            raise OptimizeError(
                errors.FACTORY_NOT_FOUND,
                f"{field_name} {reference!r}: importing {module_name} failed: {type(error).__name__}: {error}",
            ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise OptimizeError(
            errors.FACTORY_NOT_FOUND,
            f"{field_name} {reference!r}: {module_name} ({getattr(module, '__file__', '?')}) has no function "
            f"{attribute!r}; it defines {', '.join(defined) or 'none'}",
        )

    @functools.wraps(factory)
    def call(*args: Any, **kwargs: Any) -> Any:
        # A factory may import its own helpers from the same folder when it runs, not only at import.
        with _on_import_path(paths):
            return factory(*args, **kwargs)

    return call


def factory_digest(reference: str, folders: list[tuple[Path, str]]) -> str | None:
    """sha256 of the source files of a factory's module (a package: all its .py files), found as import_factory
    finds it, without importing it: part of a build key, so an edited mymodels.py is built again, not reused.
    None when it cannot be found (the build will say why)."""
    import hashlib
    import importlib.util

    module_name = reference.partition(":")[0]
    with _on_import_path([folder for folder, _ in folders]):
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            return None
    if found is None or not found.origin or not Path(found.origin).is_file():
        return None
    origin = Path(found.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(origin.parent)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def load_torch_module(spec: SourceSpec, local: Path, folders: list[tuple[Path, str]] | None = None) -> Any:
    """Build the torch module a SourceSpec describes (factory + state dict, TorchScript, or program)."""
    import torch

    if spec.format == "torch":
        try:
            return torch.jit.load(str(local), map_location="cpu").eval()
        except Exception as error:  # noqa: BLE001
            raise OptimizeError(errors.SOURCE_UNREADABLE, f"source {spec.uri} is not a TorchScript file: {error}") from None
    if spec.format == "exported_program":
        try:
            return torch.export.load(str(local))
        except Exception as error:  # noqa: BLE001
            raise OptimizeError(errors.SOURCE_UNREADABLE, f"source {spec.uri} is not a torch.export file: {error}") from None
    factory = import_factory(spec.factory or "", "source.factory", folders if folders is not None else code_dirs(spec, None, local.parent))
    try:
        state = torch.load(str(local), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise OptimizeError(
            errors.SOURCE_UNREADABLE, f"source {spec.uri} is truncated or not a torch state dict: {error}"
        ) from None
    if not isinstance(state, Mapping):
        raise OptimizeError(errors.SOURCE_UNREADABLE, f"source {spec.uri} holds a {type(state).__name__}, not a state dict")
    try:
        module = factory(**spec.factory_kwargs)
    except TypeError as error:
        raise OptimizeError(errors.FACTORY_NOT_FOUND, f"source.factory {spec.factory} refused factoryKwargs: {error}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0:3]
        raise OptimizeError(
            errors.STATE_DICT_MISMATCH, f"state dict {spec.uri} does not fit {spec.factory}: {' '.join(first)}"
        ) from None
    return module.eval()


def _check_hash(spec: SourceSpec, local: Path) -> None:
    if spec.sha256 is None:
        return
    actual = sha256_file(local)[0]
    if actual != spec.sha256:
        raise OptimizeError(
            errors.SOURCE_HASH_MISMATCH, f"source {spec.uri} has sha256 {actual}, the spec expects {spec.sha256}"
        )


def _first_layer_width(module: Any) -> tuple[str, str, int, int] | None:
    """(name, layer type, the input axis it reads, the width it expects) of the module's first Linear / Conv
    layer in registration order, eager or TorchScript; None when the first layer with weights is another kind."""
    for name, child in module.named_modules():
        kind = getattr(child, "original_name", type(child).__name__)  # TorchScript keeps the eager class name
        weight = getattr(child, "weight", None) if hasattr(child, "_parameters") else None
        if weight is None or not hasattr(weight, "shape"):
            continue
        if kind == "Linear" and len(weight.shape) == 2:
            return name or "(the model)", kind, -1, int(weight.shape[1])
        if kind in ("Conv1d", "Conv2d", "Conv3d") and len(weight.shape) >= 3:
            return name or "(the model)", kind, 1, int(weight.shape[1]) * int(getattr(child, "groups", 1))
        return None
    return None


def check_data_fits(module: Any, example_inputs: Mapping[str, np.ndarray], data_uri: str) -> None:
    """Run the torch source on two samples before exporting it: when that fails and the samples' width differs
    from what the model's first layer reads, it is a data problem (ShapeMismatch naming the file, the found and
    the expected width), not an export failure. Any other failure is left to the export, which reports it."""
    import torch

    if len(example_inputs) != 1 or not isinstance(module, torch.nn.Module):
        return
    (name, array), = example_inputs.items()
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(array)))
        return
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, ValueError, IndexError...
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        # TorchScript puts its own traceback first and the cause last.
        cause = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
    layer = _first_layer_width(module)
    if layer is None or array.ndim < 2:
        return
    layer_name, kind, axis, width = layer
    found = int(array.shape[axis])
    if found == width:
        return
    what = "features" if axis == -1 else "channels"
    raise OptimizeError(
        errors.SHAPE_MISMATCH,
        f"dataset {data_uri}: samples of input {name!r} have shape {list(array.shape[1:])} ({found} {what}); the "
        f"model's first layer {layer_name} ({kind}) expects {width} {what} (torch: {cause}). Check which columns or "
        "arrays are features: the label is left out (dataset.label), dataset.columns picks the rest",
    )


def load_source(
    spec: SourceSpec, work_dir: Path, example_inputs: Mapping[str, np.ndarray] | None, config_dir: str | None = None,
    data_uri: str | None = None,
) -> Source:
    """Load and check the source; torch sources are exported with ``example_inputs`` (names + shapes), taken from
    ``data_uri``. ``config_dir``: the config file's folder, where the factory's module is also searched."""
    from optimodel_jobs.onnx_export import export_module, export_program

    source_dir = work_dir / "source"
    folders = code_dirs(spec, config_dir, work_dir) if spec.factory else []
    if spec.format == "onnx":
        local = fetch(spec.uri, source_dir / "source.onnx", "source")
        _check_hash(spec, local)
        check_onnx(local, spec.uri)
        inputs, outputs = tensor_specs(local)
        return Source(local, sha256_file(local)[0], inputs, outputs, None, spec, folders)

    suffix = {"state_dict": ".pt", "torch": ".ts", "exported_program": ".pt2"}[spec.format]
    local = fetch(spec.uri, source_dir / f"source{suffix}", "source")
    _check_hash(spec, local)
    module = load_torch_module(spec, local, folders)
    if not example_inputs:
        raise OptimizeError(errors.EXPORT_FAILED, "a torch source needs evaluation data to export it with")
    onnx_path = source_dir / "source.onnx"
    check_data_fits(module, example_inputs, data_uri or "(evaluation data)")
    try:
        if spec.format == "exported_program":
            export_program(module, example_inputs, spec.output_names, onnx_path)
            module = module.module()
        else:
            # The exporter inlines a TorchScript module's graph in place, which would hide its structure from
            # the pruner's rebuild (optimodel_jobs.torchscript): a second copy is exported.
            exported = load_torch_module(spec, local, folders) if spec.format == "torch" else module
            export_module(exported, example_inputs, spec.output_names, onnx_path)
    except OptimizeError:
        raise
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; the user needs the cause
        shapes = {k: list(v.shape) for k, v in example_inputs.items()}
        raise OptimizeError(
            errors.EXPORT_FAILED, f"exporting source {spec.uri} to ONNX with inputs {shapes} failed: {error}"
        ) from None
    check_onnx(onnx_path, spec.uri)
    inputs, outputs = tensor_specs(onnx_path)
    return Source(onnx_path, sha256_file(local)[0], inputs, outputs, module, spec, folders)
