"""Use case 2: classify street photos that citizens and cameras report.

Classes: pothole, overflowing_bin, graffiti, fallen_tree, flooding, clear_street
(or the sub-folder names of a user's own image folder). Sources are image
folders with one sub-folder per class; ``generate_sources`` draws synthetic
ones (see :mod:`projects.street_scenes.generator`), ``integrate`` reads any
(see :mod:`projects.street_scenes.integrate`). The frame has an ``image``
column (float32 CHW arrays, 3x32x32, values in [0, 1]) and ``label``.

Model family: ``cnn`` (:mod:`projects.street_scenes.model`), logged as a
models-from-code pyfunc that takes float32 ``[batch, 3, 32, 32]``.
"""

from __future__ import annotations

from pathlib import Path

from projects.base import Dataset, UseCase
from projects.street_scenes.generator import CLASSES, SIZE, write_images
from projects.street_scenes.integrate import integrate_folders

FEATURES = ("image",)


class StreetScenes(UseCase):
    name = "street_scenes"
    task = "classification"
    metric = "macro_f1"
    direction = "maximize"
    registered_model = "street-scenes-classifier"
    description = "Classify reported street photos: pothole, overflowing bin, graffiti, fallen tree, flooding, clear."
    default_size = 2000
    policy_file = Path(__file__).parent / "policy.yaml"

    @property
    def families(self):
        from projects.street_scenes.model import FAMILIES  # imports Paddle

        return FAMILIES

    def generate_sources(self, folder: Path, n: int, seed: int) -> list[Path]:
        return [write_images(Path(folder), int(n), int(seed))]

    def integrate(self, sources: list[Path]) -> Dataset:
        frame, report = integrate_folders([Path(p) for p in sources])
        return Dataset.build(self.name, frame, "label", FEATURES, sources, report)

    def category_values(self, dataset: Dataset) -> dict[str, list]:
        return {"label": sorted(dataset.frame["label"].unique())}


__all__ = ["CLASSES", "FEATURES", "SIZE", "StreetScenes"]
