"""Type stubs of the compiled part of lcross (the reference: docs/PYTHON.md)."""

from os import PathLike
from types import TracebackType
from typing import Any, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
"""The version of the lcross crates this package was built from."""

DEFAULT_MODEL: str
"""The model the CLI uses unless told (smollm2-135m-instruct)."""

StrPath = Union[str, "PathLike[str]"]
ArrayLike = Any
"""numpy arrays, nested lists, or objects with ``__array__`` / ``__dlpack__`` (torch tensors on the CPU)."""
Beta = Union[float, Literal["auto"]]
Layers = Union[int, Sequence[int], str]
Steering = Union["Steer", Sequence["Steer"], None]

class LcrossError(Exception):
    """Base class of every error lcross raises."""

class ModelError(LcrossError):
    """A model could not be found, loaded or run."""

class DataError(LcrossError):
    """A dataset or artifact file is malformed or cannot be read (the message names the file and item)."""

class MissingDataError(DataError):
    """The public datasets are not in the data directory: run ``lcross data fetch``."""

class BadValueError(LcrossError):
    """An argument is not a value lcross takes (the message says what it expects)."""

class ShapeError(LcrossError):
    """An array, vector or matrix has the wrong size, or a layer is out of range or missing."""

class NonFiniteError(LcrossError):
    """An input holds NaN or an infinity."""

class WrongModelError(LcrossError):
    """A vector or map made for another model."""

class NotCalibratedError(LcrossError):
    """``beta="auto"`` on a vector that was never calibrated."""

class EvaluationError(LcrossError):
    """An evaluation, judge or experiment could not run as asked."""

class Model:
    """A language model lcross runs.

    ``id_or_path``: a known id (``lcross models list``), a GGUF file or a Hugging Face
    model directory. ``weights``: "f32" (dequantized, faithful) or "quantized";
    ``dtype``: "f32", "f16" or "bf16"; ``device``: "cpu", "cuda[:N]" or "metal[:N]".
    """

    def __init__(self, id_or_path: StrPath, *, weights: str = "f32", dtype: str = "f32", device: str = "cpu") -> None: ...
    @property
    def id(self) -> str:
        """The model's id (a known id, or the file's name)."""
    @property
    def n_layers(self) -> int:
        """Decoder blocks."""
    @property
    def hidden_size(self) -> int:
        """Width of the residual stream."""
    @property
    def architecture(self) -> str:
        """The architecture (llama, qwen2, gemma3...)."""
    @property
    def sha256(self) -> str:
        """sha256 of the model file (vectors and maps record it)."""
    def tokenize(self, text: str, chat: bool = False, system: Optional[str] = None) -> list[int]:
        """Token ids of ``text`` (``chat=True``: as one user message of the chat template, with the generation prompt)."""
    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens skipped)."""
    def chat(self, text: str, system: Optional[str] = None) -> str:
        """``text`` rendered as one user message of the model's chat template, with the generation prompt."""
    def hidden_states(
        self,
        texts: Union[str, Sequence[str]],
        layer: int,
        *,
        hook: str = "resid_post",
        chat: bool = False,
        cache: bool = True,
        progress: Optional[bool] = None,
    ) -> npt.NDArray[np.float32]:
        """The state at the last token of each text after block ``layer`` at hook point ``hook``
        (resid_pre, attn_out, mlp_out, resid_post): float32 array of shape (len(texts), hidden_size).
        Batched, and cached in the result store like the CLI's. ``progress``: a progress bar on
        stderr (default: when stderr is a terminal). Ctrl-C stops it (KeyboardInterrupt)."""
    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        *,
        steering: Steering = None,
        max_tokens: int = 64,
        chat: bool = True,
        system: Optional[str] = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        batch_size: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> list[str]:
        """An answer to each prompt, generated in one batch. ``steering`` applies to every row
        (default: the ``with m.steering(...)`` blocks being run). ``temperature=0`` decodes greedily;
        row i samples with ``seed + i``. ``batch_size``: rows in flight (default: what fits).
        ``progress``: a progress bar on stderr (default: when stderr is a terminal). Ctrl-C stops it."""
    def generate_batch(
        self,
        rows: Sequence[Tuple[str, Steering]],
        *,
        max_tokens: int = 64,
        chat: bool = True,
        system: Optional[str] = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        batch_size: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> list[str]:
        """Rows with different steerings in one batch: ``rows`` is a list of ``(prompt, steering)``."""
    def steering(self, steering: Steering) -> SteeringBlock:
        """A context manager: ``with m.steering([Steer(sv, 4.0)]): m.generate(...)`` steers the calls
        inside it that are given no ``steering``."""

class SteeringBlock:
    """What ``Model.steering`` returns."""

    def __enter__(self) -> SteeringBlock: ...
    def __exit__(self, *args: Any) -> bool: ...

class Steer:
    """One steering: ``beta * vector`` (or another intervention) at the vector's layers (or only
    ``layer``), at hook point ``hook`` (default: where the vector was read), at ``positions``
    ("all", "prompt-last", "generated", "prompt-last+generated", "from:N"; default as in the CLI).
    ``intervention``: "add", "ablate" (project the direction out) or "cap" (clamp the projection
    at ``beta``). ``beta="auto"`` uses the vector's calibrated beta. A vector of another model
    than the one generating is refused (WrongModelError) unless ``force=True``."""

    def __init__(
        self,
        vector: SteeringVector,
        beta: Optional[Beta] = None,
        *,
        layer: Optional[int] = None,
        hook: Optional[str] = None,
        intervention: str = "add",
        positions: Optional[str] = None,
        force: bool = False,
    ) -> None: ...
    @property
    def vector(self) -> SteeringVector: ...
    @property
    def beta(self) -> Beta: ...

class SteeringVector:
    """A steering vector: one direction per layer with the metadata of where it came from.
    Files are the CLI's (safetensors with JSON metadata)."""

    @staticmethod
    def load(path: StrPath) -> SteeringVector:
        """Read a vector file (written by ``save`` or the CLI)."""
    @staticmethod
    def from_arrays(arrays: dict[int, ArrayLike], *, model: Model, concept: str = "custom", hook: str = "resid_post") -> SteeringVector:
        """A vector of ``model`` from arrays, one per layer (``{layer: array of hidden_size}``)."""
    def save(self, path: StrPath) -> None:
        """Write the vector (the CLI and the server read it)."""
    def to_gguf(self, path: StrPath) -> None:
        """Write the vector as a llama.cpp control vector (GGUF)."""
    @property
    def layers(self) -> list[int]:
        """The layers (0-based), ascending."""
    @property
    def concept(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def metadata(self) -> dict[str, Any]:
        """Everything recorded about the vector (method, dataset, hashes, calibration...)."""
    @property
    def fingerprint(self) -> str:
        """sha256 of the values and metadata (what result caches key on)."""
    def __getitem__(self, layer: int) -> npt.NDArray[np.float32]:
        """The direction at ``layer``."""
    def __len__(self) -> int: ...
    def __contains__(self, layer: int) -> bool: ...

class LinearMap:
    """A linear map T (d_s x d_t) between two hidden spaces: a source row x maps to x @ T.
    Files are the CLI's."""

    @staticmethod
    def load(path: StrPath) -> LinearMap:
        """Read a map file (written by ``save`` or ``lcross align``)."""
    def save(self, path: StrPath) -> None: ...
    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        """T, shape (d_s, d_t)."""
    @property
    def bias(self) -> Optional[npt.NDArray[np.float64]]:
        """The bias b of an affine map (y ~ x @ T + b), None for linear maps; vectors move through T alone."""
    @property
    def shape(self) -> Tuple[int, int]: ...
    @property
    def diagnostics(self) -> dict[str, Any]:
        """n, source_dim, target_dim, train_r2, heldout_r2 (None below 10 rows), rank, interpolating, lambda, seconds."""
    @property
    def metadata(self) -> dict[str, Any]: ...
    def apply(self, x: ArrayLike) -> npt.NDArray[np.float32]:
        """x @ T for one row (d_s,) or rows (n, d_s)."""

def extract(
    model: Model,
    dataset: Union[StrPath, Sequence[Tuple[str, str]]],
    layers: Layers,
    *,
    method: str = "mean-diff",
    limit: Optional[int] = None,
    balance_letters: bool = False,
    hook: str = "resid_post",
    normalize: bool = False,
    raw: bool = False,
    concept: Optional[str] = None,
    cache: bool = True,
    progress: Optional[bool] = None,
) -> SteeringVector:
    """A steering vector of ``model`` at ``layers`` from a concept dataset: a path (CAA A/B file,
    pairs JSON/JSONL), a name the CLI knows (builtin:optimism, caa:refusal, happiness...), or a list
    of (positive, negative) strings (each a user message of the chat template; ``raw=True``: as they
    are). ``method``: "mean-diff" (CAA) or "pca" (RepE). ``progress``: a progress bar on stderr
    (default: when stderr is a terminal). Ctrl-C stops it (KeyboardInterrupt; the activation cache
    keeps only whole batches)."""

def fit_map(
    x: ArrayLike,
    y: ArrayLike,
    *,
    estimator: str = "ols",
    source: Optional[Model] = None,
    target: Optional[Model] = None,
    source_layer: int = 0,
    target_layer: int = 0,
    hook: str = "resid_post",
) -> LinearMap:
    """T with X @ T ~ Y on paired rows (X: (n, d_s), Y: (n, d_t)). ``estimator``: "ols" (the paper's
    pseudo-inverse; the minimum-norm solution when n < d_s), "ridge[:LAMBDA]", "procrustes",
    "affine" (centred least squares plus a bias: ``T.bias``), "mlp[:HIDDEN]" (Oozeer et al.'s
    autoencoder, seeded; ``T.matrix`` is its mean Jacobian and vectors move through the network),
    "reduced-rank[:RANK]" (the OLS map kept to its leading directions; the rank chosen on held-out
    rows unless given: ``T.diagnostics["map_rank"]``), "random[:SEED]", "identity". ``source`` / ``target`` and the layers are recorded so vectors of
    that model transfer through the map."""

def align(
    source: Model,
    target: Model,
    corpus: str,
    *,
    source_layer: int,
    target_layer: int,
    limit: Optional[int] = None,
    skip: int = 0,
    estimator: str = "ols",
    hook: str = "resid_post",
    cache: bool = True,
    progress: Optional[bool] = None,
) -> LinearMap:
    """Fit a map between two models on the last-token states of a shared corpus (a dataset name or
    path, or a .txt file with a text per line), as ``lcross align`` does. ``estimator="embedding"``
    fits on the two models' token embeddings of their shared vocabulary instead (``corpus`` unused,
    ``limit`` caps the tokens; no forward pass). ``progress`` and Ctrl-C as in ``extract``."""

def similarity(x: ArrayLike, y: ArrayLike, *, topk: int = 10, cca_dim: int = 10) -> dict[str, Any]:
    """How alike two representations of the same texts are, with the conventions of Huh et al.
    (2024): rows L2-normalised, then mutual k-NN, CKA, unbiased CKA, CKNNA and SVCCA
    ({"mutual_knn", "cka", "unbiased_cka", "cknna", "svcca", "n"}). ``x`` (n, d_a), ``y`` (n, d_b):
    row i of each is the state of text i."""

def transfer(sv: SteeringVector, map: LinearMap, *, force: bool = False) -> SteeringVector:
    """sv @ T: the vector moved into the target model's space, provenance kept."""

def evaluate(
    metric: Literal["ab", "open-ended", "harm", "emotion", "fair"],
    model: Model,
    *,
    vectors: Optional[Sequence[SteeringVector]] = None,
    betas: Optional[Sequence[Beta]] = None,
    dataset: Optional[StrPath] = None,
    concept: Optional[str] = None,
    limit: Optional[int] = None,
    judge: Union[Model, str, None] = None,
    judge_format: Optional[str] = None,
    side_effects: bool = False,
    max_tokens: int = 64,
    temperature: Optional[float] = None,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: Optional[int] = None,
    hook: Optional[str] = None,
    positions: Optional[str] = None,
    intervention: Optional[str] = None,
    cache: bool = True,
    items: bool = False,
    progress: Optional[bool] = None,
) -> dict[str, Any]:
    """One of the CLI's evaluations under every (vector, beta) condition: the report of
    ``lcross eval METRIC --json`` ({"metric", "rows": [{"condition", "beta", "mean", "stderr", "n", ...}],
    "about"}), with "items" (every answer and score) when ``items=True``. ``progress`` and Ctrl-C
    as in ``extract``."""

def eval_ab(
    model: Model,
    dataset: StrPath,
    *,
    vectors: Optional[Sequence[SteeringVector]] = None,
    betas: Optional[Sequence[Beta]] = None,
    limit: Optional[int] = None,
    hook: Optional[str] = None,
    positions: Optional[str] = None,
    intervention: Optional[str] = None,
    cache: bool = True,
    progress: Optional[bool] = None,
) -> dict[str, Any]:
    """The A/B metric (mean probability of the behaviour-matching letter) on held-out questions."""

def calibrate(
    model: Model,
    vector: SteeringVector,
    metric: Literal["ab", "open-ended", "harm", "emotion", "fair"],
    *,
    dataset: Optional[StrPath] = None,
    concept: Optional[str] = None,
    betas: Optional[Sequence[float]] = None,
    direction: Literal["increase", "decrease"] = "increase",
    drift_budget: float = 1.0,
    max_perplexity_ratio: float = 3.0,
    limit: Optional[int] = None,
    judge: Union[Model, str, None] = None,
    judge_format: Optional[str] = None,
    max_tokens: int = 64,
    temperature: Optional[float] = None,
    seed: int = 0,
    hook: Optional[str] = None,
    positions: Optional[str] = None,
    intervention: Optional[str] = None,
    cache: bool = True,
    progress: Optional[bool] = None,
) -> Tuple[Optional[SteeringVector], dict[str, Any]]:
    """Choose beta as ``lcross calibrate`` does; returns the vector with its calibration recorded
    (None when no beta qualifies) and the report."""
