"""What happens to served answers: recorded on purpose, joined to their true outcomes, watched.

Public face (a notebook imports these; the CLI and the console call them)::

    from monitoring import recorder_for, open_store, add_feedback, read_outcomes, monitor, Reference
    recorder = recorder_for(use_case, "sample=0.1")          # serving writes answered rows to it
    add_feedback(open_store(), read_outcomes("outcomes.csv"))  # late labels, joined by answer id
    report = monitor(open_store(), Reference(training_frame, time="created_at", group="district"))
    print(report.text()); report.alerts

``monitoring`` sits beside ``serving``: it imports the ground, ``projects`` and ``registry`` (through its
face); serving never imports it (it writes through the small :class:`Recorder` interface).
"""

from typing import TYPE_CHECKING

from civicml.lazy import lazy_face

if TYPE_CHECKING:
    from monitoring.drift import DriftSettings, Reference, column_kinds, detect_drift, drifting_since
    from monitoring.feedback import FeedbackResult, add_feedback, read_outcomes
    from monitoring.quality import estimate_vs_real, live_quality, parse_window
    from monitoring.masking import RecordMasking
    from monitoring.records import AnswerRecord, RecordPolicy, RecordStore, existing_store, new_answer_id, open_store
    from monitoring.recorder import NoRecorder, Recorder, Recording, recorder_for
    from monitoring.report import (Alert, MonitoringPolicy, MonitorReport, audit_alerts, live_frame, monitor,
                                   post_alerts)
    from monitoring.artifacts import DistrictFigures, district_figures, latest_run, log_report, write_artifacts
    from monitoring.review import Review, labelled_answers, review_answer, review_counts

__getattr__, __dir__ = lazy_face(__name__, {
    "monitoring.drift": ("DriftSettings", "Reference", "column_kinds", "detect_drift", "drifting_since"),
    "monitoring.feedback": ("FeedbackResult", "add_feedback", "read_outcomes"),
    "monitoring.quality": ("estimate_vs_real", "live_quality", "parse_window"),
    "monitoring.masking": ("RecordMasking",),
    "monitoring.records": ("AnswerRecord", "RecordPolicy", "RecordStore", "existing_store",
                           "new_answer_id", "open_store"),
    "monitoring.recorder": ("NoRecorder", "Recorder", "Recording", "recorder_for"),
    "monitoring.report": ("Alert", "MonitoringPolicy", "MonitorReport", "audit_alerts", "live_frame", "monitor",
                          "post_alerts"),
    "monitoring.artifacts": ("DistrictFigures", "district_figures", "latest_run", "log_report", "write_artifacts"),
    "monitoring.review": ("Review", "labelled_answers", "review_answer", "review_counts"),
})

__all__ = [
    "Alert", "AnswerRecord", "DriftSettings", "FeedbackResult", "MonitorReport", "MonitoringPolicy", "NoRecorder",
    "Recorder", "RecordMasking", "RecordPolicy", "RecordStore", "Recording", "Reference",
    "add_feedback", "column_kinds", "detect_drift", "drifting_since", "estimate_vs_real", "live_frame", "live_quality",
    "monitor", "new_answer_id", "open_store", "parse_window", "read_outcomes", "recorder_for",
    "DistrictFigures", "audit_alerts", "district_figures", "latest_run", "log_report", "post_alerts",
    "write_artifacts",
    "Review", "existing_store", "labelled_answers", "review_answer", "review_counts",
]
