"""The county information platform: a web portal over the warehouse (``gaibao serve``).

Routes are thin (``portal.app``); who may see what is decided in one dependency
(``portal.access``); the work is done by plain functions in the other modules.
"""
