"""The one exception family Featherweight raises for problems a user can fix."""


class FeatherweightError(Exception):
    """Base class: the message is one line a user can act on."""


class BadInputError(FeatherweightError):
    """A recipe, model file or dataset that is malformed, unsafe or does not fit."""


class UnsupportedModelError(FeatherweightError):
    """A well-formed model that a technique cannot handle (names the layer or op)."""


class StepFailedError(FeatherweightError):
    """A pipeline step that failed while running on valid input."""
