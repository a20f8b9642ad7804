"""read_state_dict: the tensors of a PyTorch `.pth`/`.pt`/`.bin` or `.safetensors` file, no torch.

`torch.save` writes a zip archive (torch >= 1.6) or, before that or with
`_use_new_zipfile_serialization=False`, one stream of pickles followed by the raw
storages; older downloads such as torchvision's first VGG files use the second
layout. Either holds a pickle whose tensors point at raw storages. Unpickling
can run any code, so the pickle is read by an Unpickler that resolves only what
a state_dict needs, the rule of torch's own `torch.load(weights_only=True)`:
OrderedDict, torch's tensor rebuild functions and its typed storages. Any other
global is refused before anything calls it. Tensors come back as numpy arrays.
"""
import collections
import dataclasses
import json
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

# Storage classes a state_dict's pickle names, and the dtype of their elements.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# Keys a checkpoint dict may keep its state_dict under (timm's and many training scripts').
STATE_DICT_KEYS = ("state_dict", "model")
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
ZIP_MAGIC = b"PK\x03\x04"
# torch.save files; .bin is the name the Hugging Face hub gives them (timm's pytorch_model.bin).
TORCH_EXTENSIONS = (".pth", ".pt", ".bin")
SAFETENSORS_EXTENSION = ".safetensors"
# The largest header the safetensors library reads (its MAX_HEADER_SIZE).
SAFETENSORS_MAX_HEADER = 100_000_000


class RefusedPickle(ValueError):
  """The pickle names something other than tensors and plain containers."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: type


@dataclasses.dataclass(frozen=True)
class _Storage:
  """A storage the pickle refers to; its bytes are read once the pickle is done."""
  key: str
  dtype: type
  numel: int


@dataclasses.dataclass(frozen=True)
class _Tensor:
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  strides: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, strides, *_):
  """torch._utils._rebuild_tensor(_v2); requires_grad, hooks and metadata do not matter here."""
  if not (isinstance(storage, _Storage) and _is_ints(shape) and _is_ints(strides)
          and len(shape) == len(strides) and isinstance(offset, int)):
    raise RefusedPickle("a tensor whose storage, shape or strides are malformed")
  return _Tensor(storage, offset, tuple(shape), tuple(strides))


def _rebuild_parameter(data, *_):
  """torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor."""
  if not isinstance(data, _Tensor):
    raise RefusedPickle("a Parameter without a tensor")
  return data


def _is_ints(values):
  return isinstance(values, (tuple, list)) and all(
      isinstance(value, int) and not isinstance(value, bool) for value in values)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) not in ALLOWED_GLOBALS:
      raise RefusedPickle(f"`{module}.{name}`, which is not a tensor or a plain container")
    return ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    # ("storage", storage type, key, location, numel[, view metadata]).
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
      raise RefusedPickle(f"a reference to {type(pid).__name__} that is not a typed storage")
    return _Storage(str(pid[2]), pid[1].dtype, pid[4])


def _unpickle(file):
  return _StateDictUnpickler(file).load()


def _materialize(tensor, storages):
  """The tensor's elements as a new array, after checking they lie inside its storage."""
  data = storages[tensor.storage.key]
  shape, strides = tensor.shape, tensor.strides
  if any(size < 0 for size in shape) or min(strides, default=0) < 0 or tensor.offset < 0:
    raise RefusedPickle("a tensor with negative sizes, strides or offset")
  if 0 in shape:
    return np.zeros(shape, data.dtype)
  last = tensor.offset + sum((size - 1) * stride for size, stride in zip(shape, strides))
  if last >= data.size:
    raise ValueError(f"a tensor reaches element {last} of a storage of {data.size} elements "
                     "(truncated file?)")
  view = np.lib.stride_tricks.as_strided(
      data[tensor.offset:], shape, [stride * data.itemsize for stride in strides], writeable=False)
  return np.array(view)


def _storage_array(raw, storage, byteorder):
  dtype = np.dtype(storage.dtype).newbyteorder("<" if byteorder == "little" else ">")
  if len(raw) < storage.numel * dtype.itemsize:
    raise ValueError(f"storage {storage.key} holds {len(raw)} bytes, {storage.numel} elements "
                     f"of {dtype.name} need {storage.numel * dtype.itemsize} (truncated file?)")
  return np.frombuffer(raw, dtype, count=storage.numel).astype(storage.dtype, copy=False)


def _tensors_in(value):
  """Every _Tensor inside `value`'s containers."""
  if isinstance(value, _Tensor):
    yield value
  elif isinstance(value, dict):
    for item in value.values():
      yield from _tensors_in(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _tensors_in(item)


def _open_zip(path):
  try:
    return zipfile.ZipFile(path)
  except zipfile.BadZipFile as error:
    raise ValueError(f"a damaged zip archive ({error}; truncated file?)") from error


def _zip_pickle(archive):
  """(the prefix of the archive's entries, what its data.pkl holds)."""
  pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
  if len(pickles) != 1:
    raise ValueError(f"a zip archive without torch.save's one data.pkl (found {pickles})")
  with archive.open(pickles[0]) as data_pkl:
    return pickles[0][:-len("data.pkl")], _unpickle(data_pkl)


def _read_zip(path):
  archive = _open_zip(path)
  with archive:
    prefix, result = _zip_pickle(archive)
    byteorder_name = f"{prefix}byteorder"
    byteorder = (archive.read(byteorder_name).decode().strip()
                 if byteorder_name in archive.namelist() else "little")
    storages = {}
    for tensor in _tensors_in(result):
      storage = tensor.storage
      if storage.key not in storages:
        raw = archive.read(f"{prefix}data/{storage.key}")
        storages[storage.key] = _storage_array(raw, storage, byteorder)
  return result, storages


def _legacy_pickle(file):
  """(byte order, the saved object) from the pickles that open the legacy layout."""
  if _unpickle(file) != LEGACY_MAGIC_NUMBER:
    raise ValueError("neither a zip archive nor torch's legacy serialization")
  _unpickle(file)  # Protocol version.
  sys_info = _unpickle(file)
  byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get(
      "little_endian", True) else "big"
  return byteorder, _unpickle(file)


def _read_legacy(path):
  """torch's `_legacy_load` layout: magic, protocol, sys info, the object, storage keys, storages."""
  with open(path, "rb") as file:
    byteorder, result = _legacy_pickle(file)
    keys = _unpickle(file)
    by_key = {tensor.storage.key: tensor.storage for tensor in _tensors_in(result)}
    storages = {}
    for key in keys:
      # Each storage: its element count (int64), then its bytes.
      header = file.read(8)
      if len(header) < 8:
        raise ValueError(f"the file ends before storage {key} (truncated file?)")
      numel = int.from_bytes(header, byteorder)
      storage = by_key.get(str(key))
      if storage is None:
        raise ValueError(f"storage {key} is stored but no tensor uses it")
      raw = file.read(numel * np.dtype(storage.dtype).itemsize)
      storages[storage.key] = _storage_array(raw, dataclasses.replace(storage, numel=numel),
                                             byteorder)
  missing = sorted(set(by_key) - set(storages))
  if missing:
    raise ValueError(f"storages {missing[:3]} are missing (truncated file?)")
  return result, storages


def _state_dict_of(result):
  """The {name: tensor} dict in what was saved: a state_dict or a checkpoint holding one."""
  if isinstance(result, dict):
    for key in STATE_DICT_KEYS:
      if isinstance(result.get(key), dict):
        result = result[key]
        break
  if not isinstance(result, dict) or not result:
    raise ValueError(f"not a state_dict: the file holds a {type(result).__name__}")
  for name, value in result.items():
    if not isinstance(name, str) or not isinstance(value, _Tensor):
      raise ValueError(f"not a state_dict: {name!r} holds a {type(value).__name__}, not a tensor")
  return result


def _is_zip(path):
  with open(path, "rb") as file:
    return file.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def _read_torch(path):
  result, storages = _read_zip(path) if _is_zip(path) else _read_legacy(path)
  return {name: _materialize(tensor, storages) for name, tensor in _state_dict_of(result).items()}


def _torch_shapes(path):
  if _is_zip(path):
    with _open_zip(path) as archive:
      result = _zip_pickle(archive)[1]
  else:
    with open(path, "rb") as file:
      result = _legacy_pickle(file)[1]
  return {name: tensor.shape for name, tensor in _state_dict_of(result).items()}


def _check_safetensors_length(path):
  """ValueError for a file shorter than its header says: 8 bytes of header length, the JSON
  header, then the data up to the largest end offset. A header that does not parse is
  left to the library to name."""
  with open(path, "rb") as file:
    length_bytes = file.read(8)
    header_length = int.from_bytes(length_bytes, "little")
    header = file.read(min(header_length, SAFETENSORS_MAX_HEADER))
  size = os.path.getsize(path)
  if len(length_bytes) < 8 or len(header) < min(header_length, SAFETENSORS_MAX_HEADER):
    raise ValueError(f"the file ends inside its header after {size} bytes (truncated file?)")
  try:
    tensors = json.loads(header)
    data_length = max((entry["data_offsets"][1] for name, entry in tensors.items()
                       if name != "__metadata__"), default=0)
  except (ValueError, TypeError, KeyError, IndexError, AttributeError):
    return
  expected = 8 + header_length + data_length
  if size < expected:
    raise ValueError(f"the file holds {size} bytes, its header describes {expected} "
                     "(truncated file?)")


def _read_safetensors(path):
  # Imported here: only .safetensors files need the package.
  from safetensors import safe_open
  _check_safetensors_length(path)
  with safe_open(path, framework="numpy") as file:
    return {name: file.get_tensor(name) for name in file.keys()}


def _safetensors_shapes(path):
  from safetensors import safe_open
  with safe_open(path, framework="numpy") as file:
    return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}


def is_torch_file(path) -> bool:
  return os.fspath(path).endswith(TORCH_EXTENSIONS + (SAFETENSORS_EXTENSION,))


def read_state_dict(path) -> dict[str, np.ndarray]:
  """{parameter name: array} from a `.pth`/`.pt`/`.bin` file of torch.save or a `.safetensors` file.

  Raises ValueError in one line for anything else: a pickle naming other objects
  (never called), a truncated or malformed file, a file that holds no state_dict.
  """
  path = os.fspath(path)
  return _reading(path, _read_safetensors if path.endswith(SAFETENSORS_EXTENSION) else _read_torch)


def read_shapes(path) -> dict[str, tuple[int, ...]]:
  """{parameter name: shape} of the file read_state_dict reads, from its pickle or header
  alone (no tensor data is read); its errors."""
  path = os.fspath(path)
  return _reading(path, _safetensors_shapes if path.endswith(SAFETENSORS_EXTENSION)
                  else _torch_shapes)


def _reading(path, reader):
  """reader(path), its errors turned into ValueError in one line."""
  try:
    return reader(path)
  except RefusedPickle as error:
    raise ValueError(f"Refusing to load {path}: its pickle names {error}. Only tensors and "
                     "plain containers are read (the rule of torch.load(weights_only=True)); "
                     "pickled objects can run code. Received: path="
                     f"{path!r}") from error
  except FileNotFoundError as error:
    raise ValueError(f"No such weights file. Received: path={path!r}") from error
  except Exception as error:  # Broken files fail in zipfile, pickle, numpy or safetensors.
    message = " ".join(str(error).split()) or type(error).__name__
    raise ValueError(f"Cannot read {path} as PyTorch weights: {message}. Received: "
                     f"path={path!r}") from error
