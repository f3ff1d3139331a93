"""The course's nbgrader configuration, loaded the way nbgrader loads it."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config, PyFileConfigLoader

REPO = Path(__file__).resolve().parents[1]


def course_root(course: Path | None) -> Path:
    """The course folder: the one given, else the current folder if it has an
    ``nbgrader_config.py``, else this repository."""
    if course is not None:
        folder = Path(course).resolve()
        if not (folder / "nbgrader_config.py").is_file():
            raise FileNotFoundError(
                f"{folder} has no nbgrader_config.py: pass the course folder (the one with "
                "nbgrader_config.py, submitted/ and the gradebook) with --course"
            )
        return folder
    here = Path.cwd()
    return here if (here / "nbgrader_config.py").is_file() else REPO


def load_course_config(course: Path, *, db_url: str | None = None, worker: int = 0) -> Config:
    """``course/nbgrader_config.py`` as a traitlets Config, with the root, database and worker set."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    if db_url:
        config.CourseDirectory.db_url = db_url
    config.IsolatedExecute.worker = worker
    return config


def default_db_url(course: Path, config: Config | None = None) -> str:
    config = config or load_course_config(course)
    return config.CourseDirectory.get("db_url") or f"sqlite:///{course / 'gradebook.db'}"
