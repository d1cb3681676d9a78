"""Which ONNX Runtime execution providers a pool asks for and which it gets: a pure decision.

A pool asks for ``cpu``, ``cuda`` or ``tensorrt``; what ONNX Runtime offers depends on the wheel and
the node. When the ask cannot be met the plan says so (``fallback``), and the server logs it and counts
it, so that a GPU pool silently serving from CPU shows on a dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass

ORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in ORT_NAMES.items()}
# What each ask may use, best first; CPU always closes the list so a session can always be made.
PREFERENCE = {
    "cpu": ["cpu"],
    "cuda": ["cuda", "cpu"],
    "tensorrt": ["tensorrt", "cuda", "cpu"],
}


@dataclass(frozen=True)
class ProviderPlan:
    requested: str
    used: str
    providers: list[str]

    @property
    def fallback(self) -> bool:
        return self.used != self.requested

    def describe(self) -> str:
        if not self.fallback:
            return f"execution provider {self.used} as asked"
        return f"execution provider {self.requested} was asked for but is not available here; falling back to {self.used}"


def normalise_provider(name: str | None) -> str:
    """Short name ("cpu", "cuda", "tensorrt") from a short or ONNX Runtime name; None means cpu."""
    if name is None or name == "":
        return "cpu"
    lowered = name.lower()
    if lowered in ORT_NAMES:
        return lowered
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    raise ValueError(f"unknown execution provider {name!r}; expected one of {', '.join(ORT_NAMES)}")


def plan_providers(requested: str, available: list[str]) -> ProviderPlan:
    """The providers to hand ONNX Runtime, given what was asked for and what ``get_available_providers`` says."""
    ask = normalise_provider(requested)
    usable = [short for short in PREFERENCE[ask] if short == "cpu" or ORT_NAMES[short] in available]
    return ProviderPlan(requested=ask, used=usable[0], providers=[ORT_NAMES[s] for s in usable])


def plan_from_session(plan: ProviderPlan, session_providers: list[str]) -> ProviderPlan:
    """Correct a plan with what the session really runs on (CUDA may be in the wheel but have no device)."""
    if not session_providers:
        return plan
    actual = SHORT_NAMES.get(session_providers[0], session_providers[0])
    return ProviderPlan(requested=plan.requested, used=actual, providers=list(session_providers))
