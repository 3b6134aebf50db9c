"""The example projects `saga init` copies (data, not code of the engine): `blank`, a
small signup saga, `checkout`, this repository's own example, `common`, the files every
project gets, and `samples`, a payload of each example's first event."""
