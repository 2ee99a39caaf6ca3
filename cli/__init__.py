"""The ``elasticir`` command line (installed as ``elasticir.cli``): one thin module per command."""
