"""The dialects: parse the wire, call one use case, render the result or the error in the dialect's shape."""
