"""Rules for decision makers: a shallow surrogate decision tree fitted to the model's own answers.

At registration (when a held-out set is given) :func:`log_insights` asks the new
version for its answers on the held-out rows, fits a small tree to those answers on
part of the rows (``fit_fraction``), and measures its *fidelity* -- the share of the
other rows where the rules give the model's own answer (R² of the model's values for
regression). The rules, their fidelity, and the global views of
:mod:`registry.views` are logged beside the version's run under
``insights/<model>/v<version>/``, and tagged on the version:

* ``civicml.rules_fidelity`` -- e.g. ``0.93`` (on ``n`` rows the tree never saw);
* ``civicml.insights`` -- the artifact folder's ``runs:/`` URI.

The tree reads features a person can check: ``description contains 'pothole'``
(the most frequent words of each text column), ``district is Midtown`` for
categories, and numeric columns as they are.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from civicml.access import require
from civicml.answers import target_unit
from civicml.errors import CivicMLError, InvalidInput, NotFound
from civicml.settings import Settings
from civicml.tags import TAG_INSIGHTS, TAG_RULES_CHECKED, TAG_RULES_FIDELITY, TAG_USE_CASE
from registry import views
from registry.gates import PromotionContext, predicted_labels
from registry.inputs import choose_held_out
from registry.queries import versions
from registry.store import ModelStore
from registry.use_cases import use_case_named

log = logging.getLogger("civicml.registry")

MAX_CATEGORIES = 40  # a text column with more distinct values than this is read as free text


@dataclass
class Surrogate:
    rules: list[str]
    fidelity: float
    fidelity_measure: str  # "agreement" (classification) or "r2" (regression)
    rows_fitted: int
    rows_checked: int
    max_depth: int
    leaves: int
    importance: dict[str, float] = field(default_factory=dict)  # readable feature -> importance in the tree
    word_lists: dict[str, list[str]] = field(default_factory=dict)  # named lists of words the rules test

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self, name: str, version: str) -> str:
        lines = [f"# Rules of {name} version {version}", "",
                 f"A decision tree of depth {self.max_depth} ({self.leaves} rules) fitted to the model's own answers "
                 f"on {self.rows_fitted} held-out rows.",
                 f"**Fidelity: {self.fidelity:.3f}** ({'share of' if self.fidelity_measure == 'agreement' else 'R² on'}"
                 f" {self.rows_checked} other held-out rows where the rules give the model's answer).", ""]
        lines += [f"{i + 1}. {rule}" for i, rule in enumerate(self.rules)]
        if self.word_lists:
            lines += ["", "Word lists (a text 'has <answer> words' when it contains any of them; each word came with "
                          "that answer on at least 75% of the rows the rules were fitted on):", ""]
            lines += [f"- **{name}**: {', '.join(words)}" for name, words in self.word_lists.items()]
        return "\n".join(lines) + "\n"


class _Readable:
    """Raw columns -> a 0/1 or numeric matrix whose columns are sentences a person can check."""

    def __init__(self, words_per_text: int = 60):
        self.words_per_text = words_per_text

    def fit(self, frame: pd.DataFrame, answers=None) -> "_Readable":
        from sklearn.feature_extraction.text import CountVectorizer

        self.parts_ = []
        for column in frame.columns:
            values = frame[column]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                self.parts_.append((column, "number", None))
            elif values.astype(str).nunique() <= MAX_CATEGORIES:
                self.parts_.append((column, "category", sorted(values.astype(str).unique())))
            else:
                vec = CountVectorizer(binary=True, stop_words="english", min_df=2,
                                      max_features=self.words_per_text).fit(values.astype(str))
                self.parts_.append((column, "text", vec))
                if answers is not None and np.asarray(answers).dtype.kind not in "fc":
                    every = CountVectorizer(binary=True, stop_words="english", min_df=2).fit(values.astype(str))
                    self.parts_.append((column, "lexicon", (every, _lexicons(every, values, answers))))
        return self
    def names(self, columns: dict | None = None) -> list[tuple[str, str]]:
        """(true side, false side) of each column, in plain words; a number is named by what the use case
        calls it, with its unit (``columns``: ``{col: {label, unit}}``, the model's metadata)."""
        out = []
        for column, kind, extra in self.parts_:
            if kind == "number":
                said = (columns or {}).get(column) or {}
                name = said.get("label") or column
                unit = said.get("unit")
                out.append((f"{name} ({unit})" if unit else name,) * 2)
            elif kind == "category":
                out += [(f"{column} is {v}", f"{column} is not {v}") for v in extra]
            elif kind == "text":
                out += [(f"{column} contains '{w}'", f"{column} lacks '{w}'") for w in extra.get_feature_names_out()]
            else:
                for label in extra[1]:
                    out.append((f"{column} has {label} words", f"{column} has no {label} words"))
        return out

    def word_lists(self) -> dict[str, list[str]]:
        """``<column>: <answer> words`` -> the words; rules name the lists, the card spells them out."""
        return {f"{column}: {label} words": words for column, kind, extra in self.parts_ if kind == "lexicon"
                for label, words in extra[1].items()}

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for column, kind, extra in self.parts_:
            values = frame[column]
            if kind == "number":
                blocks.append(values.to_numpy(float)[:, None])
            elif kind == "category":
                blocks.append(np.stack([(values.astype(str) == v).to_numpy(float) for v in extra], axis=1))
            elif kind == "text":
                blocks.append(extra.transform(values.astype(str)).toarray().astype(float))
            else:
                vec, lexicons = extra
                present = vec.transform(values.astype(str)).toarray() > 0
                index = {w: i for i, w in enumerate(vec.get_feature_names_out())}
                blocks.append(np.stack([present[:, [index[w] for w in words]].any(axis=1).astype(float)
                                        for words in lexicons.values()], axis=1) if lexicons
                              else np.zeros((len(frame), 0)))
        return np.hstack(blocks)


def _lexicons(vec, texts: pd.Series, answers, size: int = 16, precision: float = 0.75) -> dict[str, list[str]]:
    """Per answer, the words that (nearly) always come with it: ``text has one of ...`` features."""
    present = vec.transform(texts.astype(str)).toarray() > 0
    answers = np.asarray(answers)
    words = vec.get_feature_names_out()
    out = {}
    for label in sorted(set(answers.tolist()), key=str):
        hit = answers == label
        support = present.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(support > 0, present[hit].sum(axis=0) / np.maximum(support, 1), 0.0)
        good = [i for i in np.argsort(-present[hit].sum(axis=0)) if share[i] >= precision and support[i] >= 2][:size]
        if good:
            out[str(label)] = [str(words[i]) for i in good]
    return out


def fit_surrogate(features: pd.DataFrame, answers, *, max_depth: int = 5, max_leaves: int = 16,
                  fit_fraction: float = 0.6, seed: int = 0, columns: dict | None = None,
                  unit: str = "") -> Surrogate:
    """Fit rules to ``answers`` (the model's own, one per row of ``features``); fidelity on unseen rows."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    answers = np.asarray(answers)
    if len(features) < 10:
        raise ValueError("rules need at least 10 held-out rows")
    order = np.random.default_rng(seed).permutation(len(features))
    cut = int(len(features) * fit_fraction)
    fit_rows, check_rows = order[:cut], order[cut:]
    readable = _Readable().fit(features.iloc[fit_rows], answers[fit_rows])
    X = readable.transform(features)
    regression = answers.dtype.kind in "fc"
    tree = (DecisionTreeRegressor if regression else DecisionTreeClassifier)(
        max_depth=max_depth, max_leaf_nodes=max_leaves, min_samples_leaf=3, random_state=seed)
    tree.fit(X[fit_rows], answers[fit_rows])
    guess = tree.predict(X[check_rows])
    if regression:
        truth = answers[check_rows].astype(float)
        spread = ((truth - truth.mean()) ** 2).sum()
        fidelity = float(1 - ((truth - guess) ** 2).sum() / spread) if spread > 0 else 1.0
    else:
        fidelity = float((guess == answers[check_rows]).mean())
    names = readable.names(columns)
    importance = {_short(names[i][0]): float(v) for i, v in enumerate(tree.feature_importances_) if v > 0}
    return Surrogate(_rules(tree, names, regression, unit), round(fidelity, 4), "r2" if regression else "agreement",
                     len(fit_rows), len(check_rows), int(tree.get_depth()), int(tree.get_n_leaves()),
                     dict(sorted(importance.items(), key=lambda kv: -kv[1])), readable.word_lists())


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[:width - 1].rstrip(", '") + "…"


def _rules(tree, names: list[tuple[str, str]], regression: bool, unit: str = "") -> list[str]:
    t = tree.tree_
    out: list[tuple[int, str]] = []

    def walk(node: int, conditions: list[str]):
        if t.children_left[node] == -1:
            value = t.value[node][0]
            n = int(t.n_node_samples[node])
            if regression:
                answer = f"{float(value[0]):.4g}" + (f" {unit}" if unit else "")
                share = ""
            else:
                k = int(np.argmax(value))
                answer = f"'{tree.classes_[k]}'"
                share = f", {value[k] / value.sum():.0%} of them"
            out.append((n, f"IF {' AND '.join(conditions) or 'always'} THEN {answer} ({n} rows{share})"))
            return
        feature, threshold = t.feature[node], t.threshold[node]
        yes, no = names[feature]
        if yes == no:  # a number
            walk(t.children_left[node], conditions + [f"{yes} <= {threshold:.4g}"])
            walk(t.children_right[node], conditions + [f"{yes} > {threshold:.4g}"])
        else:  # a 0/1 feature: left is "not", right is "is"
            walk(t.children_left[node], conditions + [no])
            walk(t.children_right[node], conditions + [yes])

    walk(0, [])
    return [rule for _, rule in sorted(out, key=lambda r: -r[0])]


# -- at registration ----------------------------------------------------------------------------
def boundaries_for(tags: dict[str, str]):
    """The use case's district boundaries (its ``boundaries_file``, else ``districts.geojson`` beside its
    module), or None."""
    use_case = tags.get(TAG_USE_CASE)
    if not use_case:
        return None
    try:  # lazily, as the card does: serving imports registry and must not pull in training code
        import inspect

        from civicml.geo import load_boundaries
        from projects import get_use_case

        found = get_use_case(use_case)
        path = getattr(found, "boundaries_file", None) or Path(inspect.getfile(type(found))).parent / "districts.geojson"
        path = Path(path)
        return load_boundaries(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a map is a nicety; registration must not fail for it
        return None


MAX_ROWS = 800  # held-out rows the rules and views are computed on (a seeded sample of a larger set)


def insights(local, holdout: pd.DataFrame, target: str, folder: Path, boundaries=None,
             max_rows: int = MAX_ROWS) -> dict:
    """Compute rules and global views of ``local`` on ``holdout`` into ``folder``; return a summary.

    On at most ``max_rows`` held-out rows (a seeded sample): every view asks the model again
    (permutation importance once per column), which a slow model (the MiniLM router) feels. The per-district
    figures and the map are on every held-out row (the model asked once more about the rest), as the card's are.
    """
    everything = holdout.reset_index(drop=True)
    if len(holdout) > max_rows:
        holdout = holdout.sample(n=max_rows, random_state=0)
    ctx = PromotionContext("", local, None, holdout.reset_index(drop=True), target)
    model = ctx.model(local)
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.is_tensor_spec():  # pictures: the card's figures, but no rules
        raise ValueError("the model takes a tensor; rules and charts need named columns")
    features = ctx.features(local)
    output = model.predict(ctx.as_input(local, features))  # once: the answers and any class probabilities
    answers = predicted_labels(output)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = local.metadata or {}
    surrogate = fit_surrogate(features, answers, columns=meta.get("columns"), unit=target_unit(meta) or "")
    (folder / "rules.md").write_text(surrogate.markdown(local.version.name, local.version.version))
    (folder / "rules.json").write_text(json.dumps(surrogate.to_dict(), indent=2))
    probabilities = views.probabilities(model, features, output)
    district_rows = None
    if len(everything) > len(holdout):
        whole = PromotionContext("", local, None, everything, target)
        district_rows = everything, predicted_labels(model.predict(whole.as_input(local, whole.features(local))))
    written = views.write_all(folder, views.ViewData(ctx.holdout, target, answers, features, model.predict,
                                                     probabilities, boundaries, surrogate.importance,
                                                     district_rows))
    summary = {"model": local.version.name, "version": local.version.version, "rows": len(holdout),
               "rules_fidelity": surrogate.fidelity, "fidelity_measure": surrogate.fidelity_measure,
               "rows_checked": surrogate.rows_checked,
               "rules": len(surrogate.rules), "files": sorted(["rules.md", "rules.json", *written])}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def log_insights(store, name: str, version, holdout, target: str | None) -> dict | None:
    """The registration hook: rules and views beside the run; never fails a registration.

    Runs only when a held-out set and target are given and the version has a run.
    """
    if holdout is None or target is None or not version.run_id:
        return None
    if hasattr(holdout, "frame"):
        holdout = holdout.frame
    try:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = f"insights/{safe}/v{version.version}"
        local = store.fetch(name, version)
        with tempfile.TemporaryDirectory(prefix="civicml-insights-") as tmp:
            summary = insights(local, holdout, target, Path(tmp), boundaries_for(dict(version.tags)))
            store.client.log_artifacts(version.run_id, tmp, path)
        store.set_version_tag(name, version.version, TAG_RULES_FIDELITY, f"{summary['rules_fidelity']:.4f}")
        store.set_version_tag(name, version.version, TAG_RULES_CHECKED,
                              f"{'agreement' if summary['fidelity_measure'] == 'agreement' else 'R²'} on "
                              f"{summary['rows_checked']} held-out rows")
        store.set_version_tag(name, version.version, TAG_INSIGHTS, f"runs:/{version.run_id}/{path}")
        return summary
    except Exception as err:  # noqa: BLE001 - rules and charts are advisory: say why, keep the version
        log.warning("no rules or views for %s version %s: %s: %s", name, version.version, type(err).__name__, err)
        return None


def registration_holdout(model_uri: str, settings=None, files: list[str] | None = None, name: str | None = None):
    """(the use case, the held-out set) a registration of ``model_uri`` as ``name`` computes rules, charts and
    the map on.

    The use case is the one the source run records (``civicml.use_case``: a built-in name, a plugin,
    or a use-case file's path); for a use-case file, also the path its ``data/dataset.json`` records.
    The held-out set is :func:`registry.inputs.choose_held_out`'s, as promotion's: ``files`` (held-out
    source files, read by that use case); else the one the governing policy of ``name`` (by default the
    use case's registered model) names; else the use case's own. ``(None, None)`` when no use case can
    be found (then ``files`` are refused: nothing can read them). The held-out set is a
    ``projects.Dataset`` (``.frame``, ``.target``).
    """
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    run_id = store.run_id_of(model_uri)
    use_case = _recorded_use_case(store, model_uri, run_id)
    if use_case is None:
        if files:
            raise InvalidInput(f"{model_uri} records no use case that can be found: nothing can read "
                               f"--holdout {' '.join(map(str, files))}")
        return None, None
    name = name or getattr(use_case, "registered_model", None) or str(use_case.name)
    return use_case, choose_held_out(store, name, settings, use_case, files).dataset


def _recorded_use_case(store, model_uri: str, run_id: str | None):
    """The use case the source run of ``model_uri`` records (its tag, else its use-case file), or None."""
    tags = store.get_run(run_id, model_uri).data.tags if run_id else {}
    for candidate in (tags.get(TAG_USE_CASE), _use_case_file(store, run_id)):
        try:
            use_case = use_case_named(candidate)
        except CivicMLError:
            continue
        if use_case is not None:
            return use_case
    return None


def _use_case_file(store, run_id: str | None) -> str | None:
    """The use-case file a run's ``data/dataset.json`` records (tabular use cases), if it still exists."""
    if not run_id:
        return None
    try:
        record = json.loads(store.read_run_text(f"runs:/{run_id}/data/dataset.json"))
    except Exception:  # noqa: BLE001 - no record: no file
        return None
    path = ((record.get("cleaning") or {}).get("use_case_file") or {}).get("path")
    return path if path and Path(path).is_file() else None


# -- reading them back ---------------------------------------------------------------------------
def recorded_fidelity(name: str, version: str, settings=None) -> str | None:
    """The rules' fidelity that registering ``name`` version ``version`` recorded (None: registered without a
    held-out set), read through :func:`registry.versions` and so its access check."""
    return next((v.tags.get(TAG_RULES_FIDELITY) for v in versions(name, settings=settings) if v.version == str(version)),
                None)


INSIGHT_FILES = ("summary.json", "rules.md", "rules.json", "importance.png", "importance.csv", "predictions.png",
                 "predictions.csv", "predicted_vs_actual.png", "predicted_vs_actual.csv", "calibration.png",
                 "calibration.json", "by_district.png", "by_district.csv", "by_district.json", "map.png", "map.json")


def insight_file(name: str, version: str, filename: str, settings=None) -> bytes:
    """One file of a version's rules and views (see :data:`INSIGHT_FILES`), for any reader."""
    settings = settings or Settings.from_env()
    require(settings, "read")
    if filename not in INSIGHT_FILES:
        raise NotFound(f"no insight file '{filename}' (known: {', '.join(INSIGHT_FILES)})")
    store = ModelStore(settings)
    mv = store.get_version(name, version)
    uri = mv.tags.get(TAG_INSIGHTS)
    if not uri:
        raise NotFound(f"version {mv.version} of '{name}' has no rules or views (register it with a held-out set)")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = store.download(f"{uri}/{filename}", tmp)  # this store's client: no process-wide URI
        except Exception:  # noqa: BLE001 - a view that was not drawn (no districts, no probabilities)
            raise NotFound(f"version {mv.version} of '{name}' has no {filename}") from None
        return Path(local).read_bytes()


__all__ = ["INSIGHT_FILES", "Surrogate", "boundaries_for",
           "fit_surrogate", "insight_file", "insights", "log_insights", "registration_holdout"]
