//! Tests of the solver against synthetic fields and the simulator.
