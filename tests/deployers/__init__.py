"""A zoo of foreign deployers, written the way platform teams write them, with known verdicts.

Each is a real MLflow -> Triton deployer run by the gate as a platform's `deployer: {command}`.
Four have the gaps real platforms have; two are correct in styles unlike the gate's own and must
pass every scenario (the false-alarm check). `zoo.py` holds, for each, what is really wrong with it
and the exact verdict the gate must give on every scenario of `-m "deploy or chaos"`.
"""
