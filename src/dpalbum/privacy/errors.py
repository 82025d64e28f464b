"""Errors raised by the privacy package."""


class PrivacyBudgetExceeded(RuntimeError):
    """A planned (or charged) composition spends more ε than the budget allows.

    Raised before any private data is read when it comes from planning; the message names the
    budget, the plan's composed ε and each mechanism's share.
    """
