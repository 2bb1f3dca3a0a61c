"""CivicML: the shared ground of the lifecycle packages (settings, errors) and the CLI.

The lifecycle itself lives in the top-level packages ``projects`` (data and
training), ``tuning`` (Optuna studies), ``registry`` (MLflow Model Registry) and
``serving`` (HTTP endpoints). This package holds only what all of them share.
"""

from civicml.errors import CivicMLError, InvalidInput, NotFound, PermissionDenied
from civicml.settings import Settings

__all__ = ["CivicMLError", "InvalidInput", "NotFound", "PermissionDenied", "Settings"]
