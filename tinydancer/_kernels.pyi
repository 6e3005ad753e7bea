from collections.abc import Sequence
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

MAX_DIM: int
NUM_FEATURES: int

def available_isas() -> list[str]: ...
def compiled_isas() -> list[str]: ...
def detected_isas() -> list[str]: ...
def best_isa() -> str: ...
def active_isa() -> str: ...
def set_isa(name: str) -> None: ...
def cosine(a: ArrayLike, b: ArrayLike) -> float: ...
def cosine_batch(
    query: ArrayLike,
    rows: ArrayLike,
    row_norms: ArrayLike | None = None,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]: ...
def l2_norms(rows: ArrayLike) -> NDArray[np.float32]: ...
def int8_matvec(w: ArrayLike, scales: ArrayLike, x: ArrayLike, bias: ArrayLike | None = None) -> NDArray[np.float32]: ...
def int8_matvec_int32(w: ArrayLike, x: ArrayLike) -> NDArray[np.int32]: ...
def csr_int8_matvec(
    values: ArrayLike, indices: ArrayLike, indptr: ArrayLike, scales: ArrayLike, x: ArrayLike, bias: ArrayLike | None = None
) -> NDArray[np.float32]: ...
def csr_int8_matvec_int32(values: ArrayLike, indices: ArrayLike, indptr: ArrayLike, x: ArrayLike) -> NDArray[np.int32]: ...
def csr_matvec(
    values: ArrayLike, indices: ArrayLike, indptr: ArrayLike, x: ArrayLike, bias: ArrayLike | None = None
) -> NDArray[np.float32]: ...

class KernelMatrix:
    @property
    def kind(self) -> Literal["dense", "low_rank", "int8", "sparse_int8", "sparse"]: ...
    @staticmethod
    def dense(a: ArrayLike) -> KernelMatrix: ...
    @staticmethod
    def low_rank(left: ArrayLike, right: ArrayLike) -> KernelMatrix: ...
    @staticmethod
    def int8(values: ArrayLike, scales: ArrayLike) -> KernelMatrix: ...
    @staticmethod
    def sparse_int8(
        values: ArrayLike, indices: ArrayLike, indptr: ArrayLike, scales: ArrayLike, shape: tuple[int, int]
    ) -> KernelMatrix: ...
    @staticmethod
    def sparse(values: ArrayLike, indices: ArrayLike, indptr: ArrayLike, shape: tuple[int, int]) -> KernelMatrix: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def rank(self) -> int | None: ...
    @property
    def nnz(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def arrays(self) -> tuple[NDArray[np.generic], ...]: ...
    def to_dense(self) -> NDArray[np.float32]: ...

class FastGRNNCell:
    W: KernelMatrix
    U: KernelMatrix
    b_z: NDArray[np.float32]
    b_h: NDArray[np.float32]
    w_out: NDArray[np.float32]
    b_out: NDArray[np.float32]
    def __init__(
        self,
        W: ArrayLike | KernelMatrix,
        U: ArrayLike | KernelMatrix,
        b_z: ArrayLike,
        b_h: ArrayLike,
        w_out: ArrayLike,
        b_out: ArrayLike | float,
        zeta: float,
        nu: float,
        timesteps: int = 1,
    ) -> None: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def hidden_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def timesteps(self) -> int: ...
    @property
    def zeta(self) -> float: ...
    @property
    def nu(self) -> float: ...
    @property
    def nbytes(self) -> int: ...
    def forward(self, x: ArrayLike) -> float | NDArray[np.float32]: ...
    def forward_batch(self, X: ArrayLike, out: NDArray[np.float32] | None = None) -> NDArray[np.float32]: ...

class FeatureWeights:
    def __init__(self, weights: Sequence[float] = (0.4, 0.2, 0.15, 0.15, 0.1), recency_decay: float = 0.001) -> None: ...
    @property
    def weights(self) -> tuple[float, float, float, float, float]: ...
    @property
    def recency_decay(self) -> float: ...

def candidate_features(
    query: ArrayLike,
    embeddings: ArrayLike | CandidateArrays,
    created_at: ArrayLike | None,
    access_count: ArrayLike | None,
    success_rate: ArrayLike | None,
    now: float,
    metadata_overlap: ArrayLike | None = None,
    embedding_norms: ArrayLike | None = None,
    weights: FeatureWeights | Sequence[float] | None = None,
    recency_decay: float = 0.001,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]: ...
def route_candidates(
    model: FastGRNNCell,
    query: ArrayLike,
    embeddings: ArrayLike | CandidateArrays,
    created_at: ArrayLike | None,
    access_count: ArrayLike | None,
    success_rate: ArrayLike | None,
    now: float,
    metadata_overlap: ArrayLike | None = None,
    embedding_norms: ArrayLike | None = None,
    weights: FeatureWeights | Sequence[float] | None = None,
    confidence_threshold: float = 0.85,
    max_uncertainty: float = 0.15,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_], NDArray[np.int32]]: ...
def score_candidates(
    model: FastGRNNCell,
    query: ArrayLike,
    embeddings: ArrayLike | CandidateArrays,
    created_at: ArrayLike | None,
    access_count: ArrayLike | None,
    success_rate: ArrayLike | None,
    now: float,
    metadata_overlap: ArrayLike | None = None,
    embedding_norms: ArrayLike | None = None,
    weights: FeatureWeights | Sequence[float] | None = None,
    recency_decay: float = 0.001,
    features_out: NDArray[np.float32] | None = None,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]: ...

class CandidateArrays:
    embeddings: NDArray[np.float32]
    norms: NDArray[np.float32] | None
    created_at: NDArray[np.float64]
    access_count: NDArray[np.int64]
    success_rate: NDArray[np.float32]
    n: int
    dim: int
    def __init__(
        self,
        embeddings: ArrayLike,
        created_at: ArrayLike,
        access_count: ArrayLike,
        success_rate: ArrayLike,
        norms: ArrayLike | None = None,
    ) -> None: ...

class RouteCounters:
    def count_routed(self, candidates: int, lightweight: int, elapsed_us: float) -> None: ...
    def count_fallback(self, candidates: int, rejected: bool, model_error: bool) -> None: ...
    def count_invalid(self) -> None: ...
    def count_reload(self) -> None: ...
    def count_reload_failure(self) -> None: ...
    def snapshot(self) -> dict[str, int | float]: ...

class RouteResult:
    _ids: Any
    _fallback_reason: str | None
    _decisions: Any
    _inference_time_us: float
    _feature_time_us: float
    def _set_arrays(
        self,
        confidence: NDArray[np.float32],
        uncertainty: NDArray[np.float32],
        use_lightweight: NDArray[np.bool_],
        order: NDArray[np.integer[Any]],
    ) -> None: ...
    @property
    def _confidence(self) -> NDArray[np.float32]: ...
    @property
    def _uncertainty(self) -> NDArray[np.float32]: ...
    @property
    def _order(self) -> NDArray[np.integer[Any]]: ...
    @property
    def _lightweight(self) -> NDArray[np.bool_]: ...
    @property
    def _lightweight_count(self) -> int: ...
    def __len__(self) -> int: ...

_R = TypeVar("_R", bound=RouteResult)

class RoutePass(Generic[_R]):
    model: FastGRNNCell
    weights: FeatureWeights
    def __init__(
        self,
        model: FastGRNNCell,
        weights: FeatureWeights,
        confidence_threshold: float = 0.85,
        max_uncertainty: float = 0.15,
        result_type: type[_R] = ...,
    ) -> None: ...
    def run(
        self, query: ArrayLike, candidates: CandidateArrays, now: float, metadata_overlap: ArrayLike | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_], NDArray[np.int32], int]: ...
    def route(
        self,
        query: ArrayLike,
        candidates: CandidateArrays,
        ids: Any,
        now: float,
        metadata_overlap: ArrayLike | None,
        start_ns: int,
        feature_time_us: float,
        counters: RouteCounters,
    ) -> _R: ...

def gather_candidates(
    candidates: list[object],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64], NDArray[np.int64], NDArray[np.float32]]: ...
