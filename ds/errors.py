"""Errors raised by ds; each message names the problem and what to do about it."""


class UnsupportedModelError(ValueError):
    """A model, block or layer that ds does not know how to read."""


class PatternError(ValueError):
    """An activation pattern that does not fit the model."""


class MergeError(RuntimeError):
    """A merged network that does not reproduce the network it replaces."""


class DeviceError(ValueError):
    """A device that is unknown or not present on this machine."""
