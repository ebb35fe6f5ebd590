"""The machinery of a training run, apart from the model's wiring: the objective's pieces
(``objective``), what is measured and how it is summed and reduced (``metrics``), how the
optimiser steps (``optimization``), the callbacks (``callbacks``), experiment tracking
(``tracking``), resuming (``resume``), and one run from a config (``run``)."""
