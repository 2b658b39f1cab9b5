#!/usr/bin/env bash
# Formats every Swift file in place with the checked-in .swift-format configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
swift format -i -r Sources Tests Package.swift
