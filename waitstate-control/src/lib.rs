//! The WaitState control plane (work in progress).
