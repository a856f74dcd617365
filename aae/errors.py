"""The library's exceptions. Only the service maps them to HTTP, in one place."""


class AAEError(Exception):
    """Base class of every error the library raises on purpose."""


class DatasetError(AAEError):
    """A dataset cannot be used."""


class DatasetNotFound(DatasetError):
    """A dataset file is missing and could not be downloaded."""


class DatasetCorrupt(DatasetError):
    """A dataset file exists but is truncated, of the wrong format or fails its checksum."""


class InvalidName(AAEError, ValueError):
    """A model name, version or alias is not acceptable (e.g. it could escape the store)."""


class CheckpointNotFound(AAEError, LookupError):
    """No such model, version or alias in the checkpoint store."""


class CheckpointCorrupt(AAEError):
    """A published version cannot be read back."""


class CheckpointDamaged(CheckpointCorrupt):
    """A file of a published version differs from the version's manifest (or the manifest
    itself is unreadable): the version is never served. ``fields`` names the model, the
    version and the file, for the problem document."""

    def __init__(self, name: str, version: int, file: str, reason: str) -> None:
        super().__init__(f"model {name!r} version {version} is damaged: {file} {reason}; "
                         "it is not served (aae store verify checks the whole store)")
        self.fields = {"model": name, "version": version, "file": file}


class NonFiniteOutput(AAEError):
    """A model answered with NaN or infinite numbers (its weights are bad): the answer is
    withheld."""


class AliasInUse(AAEError):
    """A version cannot be deleted while an alias points at it."""


class CapabilityError(AAEError):
    """The model cannot do what was asked (e.g. classify without a categorical head)."""


class InvalidInput(AAEError, ValueError):
    """Inputs to a model have the wrong shape, range or values."""


class NoDigit(InvalidInput):
    """A picture holds no digit to read: blank, or nearly (``aae.digits``)."""


class ImageTooLarge(InvalidInput):
    """A picture has more pixels than the caller allows (``aae.digits.read_image``)."""


class TrainingStopped(AAEError):
    """Training was stopped on request before it finished; nothing is published."""


class TrainingDiverged(AAEError):
    """A loss became infinite or NaN: the weights are lost, nothing is published (lower
    the learning rates, or train in fp32)."""
