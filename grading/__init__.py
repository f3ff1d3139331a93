"""The course's grading pipeline, built around nbgrader.

One command per step (``python -m grading --help``): release, collect (with
pre-flight), autograde (sandboxed, verified outside the student's process, in
parallel), feedback (hidden tests removed), export (CSV) and the integrity report.
Each module's one job:

``findings``   the integrity vocabulary: what the pipeline reports about a submission
``collect``    LMS zips and Colab folders into nbgrader's ``submitted/`` layout, links never followed
``preflight``  validate and repair a submission against the release copy, or quarantine it
``scan``       static rules on the student's code (tampering, each exercise's forbidden operations)
``sandbox``    the bubblewrap command, the limits, and the fork server's client
``wire``       the protocol: pickles to the student's process, data only (JSON and raw arrays) back
``student``    what runs in the sandbox: the fork server, the student's process, the shell and its outputs
``remote``     the trusted side: the session, proxies and handles, the ``dlvision.testing`` runner
``execute``    the nbgrader preprocessor that replaces ``Execute``
``workers``    parallel autograding with claims in the gradebook's database, dead workers replaced
``report``     feedback without hidden tests, the integrity report, the grades CSV
"""
