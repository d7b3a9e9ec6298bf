"""The workflow config: validation (`validation`), the jobs it plans (`plan`, with `sources`
and `scorers`), where files live (`paths`), `--config` overrides (`overrides`) and the
fingerprint a report is checked against (`fingerprint`)."""

from imhibench.common.moved import forward_old_names

# The names of the old module imhibench.config, for one release.
__getattr__ = forward_old_names(__name__, ("paths", "scorers", "sources", "plan", "validation"))
