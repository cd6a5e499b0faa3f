"""Shared plumbing for every stage: user-facing errors, atomic output folders, typed
configs, JSONL records, model/dataset cards and pushing to the Hugging Face Hub.

Every stage of shortcot reads and writes ordinary Hugging Face artifacts; this package
holds the little that they all need so that no stage reaches into another's helpers.
"""
