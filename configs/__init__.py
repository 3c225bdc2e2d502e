"""Typed configuration loaded from the YAML profiles beside this file (see config.py)."""

from configs.config import Config, ConfigError, available_profiles, load_config, parse_override

__all__ = ["Config", "ConfigError", "available_profiles", "load_config", "parse_override"]
