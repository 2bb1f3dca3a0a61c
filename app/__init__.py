"""CivicML's top floor: the ``civicml`` command, the console and the demo.

They parse, call the layers below through their public faces and print; nothing imports them.
"""
