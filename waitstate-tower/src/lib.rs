//! WaitState for tower (work in progress).
