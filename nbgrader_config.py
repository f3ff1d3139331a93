"""nbgrader configuration of the course (nbgrader 0.9).

The course directory is the repository: ``solutions/`` is nbgrader's source
(reference solutions and hidden tests) and ``exercises/`` its release copy (what
students get). Submissions, autograded copies, feedback and the gradebook live
beside them and are ignored by git. Any option can be overridden on the command
line, e.g. ``--CourseDirectory.root=/srv/grading``.
"""

import os
import sys

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "dlvr"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# The mutant catalogue, the mutation reports and caches stay with the instructor: never copied into a release.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "mutants.toml",
    "integrity.toml",
    "mutation.md",  # the mutation-testing report (tools/mutation.py) and its triage
    "mutation-triage.toml",
]

# Autograding runs each cell with a time limit; training cells in assignments are
# written to finish well inside it on a 2-core CPU.
c.Execute.timeout = 180
c.Execute.interrupt_on_timeout = True
# A kernel that starts slowly on a busy machine is not the student's fault.
c.Execute.startup_timeout = 120

# nbgrader gives a test cell 0 points when it wrote anything to stderr. A correct
# answer whose code emits a Python warning ("file.py:12: UserWarning: ...") must
# keep its points, so stderr output that is a warning is removed before grading.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?m)^.*:\d+: [A-Za-z_][\w.]*Warning: "

# Students may not change the kernel: the release notebook's kernelspec is restored.
c.ClearSolutions.enforce_metadata = True

# Autograding runs the student's code in a sandbox and the tests outside it
# (grading/execute.py): nbgrader's Execute step is replaced, the rest is nbgrader's own.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # makes `grading` importable
from nbgrader.converters import Autograde  # noqa: E402 (after the path is set)
from nbgrader.preprocessors import Execute  # noqa: E402

c.Autograde.autograde_preprocessors = [
    "grading.execute.IsolatedExecute" if step is Execute else step
    for step in Autograde.class_traits()["autograde_preprocessors"].default()
]
c.IsolatedExecute.cell_seconds = 180
c.IsolatedExecute.notebook_seconds = 600
