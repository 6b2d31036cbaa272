"""The PyQt6 control panel (``pip install 'ostinato[gui]'``)."""
