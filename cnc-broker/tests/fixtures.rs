//! Every captured fixture decodes; what we encode matches the captures.
