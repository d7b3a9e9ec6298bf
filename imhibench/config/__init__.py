"""The workflow config: validation (`validation`), the jobs it plans (`plan`, with `sources`
and `scorers`), where files live (`paths`), `--config` overrides (`overrides`) and the
fingerprint a report is checked against (`fingerprint`)."""
