"""Command-line entry points: parse options, call one service function, render."""
