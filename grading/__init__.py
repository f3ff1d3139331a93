"""The course's grading pipeline, built around nbgrader.

One command per step (``python -m grading --help``): release, collect (with
pre-flight), autograde (sandboxed, verified outside the student's process, in
parallel), feedback (hidden tests removed), export (CSV) and the integrity report.
Modules, by concern:

``findings``   what the pipeline reports about a submission (the integrity vocabulary)
``collect``    LMS zips and Colab folders into nbgrader's ``submitted/`` layout
``preflight``  validate and repair a submission against the release copy, or quarantine it
``scan``       static rules on the student's code (tampering, per-exercise forbidden ops)
``sandbox``    the bubblewrap command and resource limits for student code
``wire``       the framed, restricted pickle protocol between trusted and student processes
``student``    the code that runs inside the sandbox: a fork server and the student's process
``remote``     the trusted side: proxies that call the student's functions
``execute``    the nbgrader preprocessor that replaces ``Execute``
``workers``    parallel autograding with claims in the gradebook's database
``report``     feedback without hidden tests, the integrity report, the grades CSV
"""
