"""Command line interface: one module per verb, each with main(argv)."""


def add_elements_option(parser) -> None:
    """-e/--elements: the elements of LAMMPS atom types 1, 2, ... for dumps that name only types
    (pacemaker's pace_select -e)."""
    parser.add_argument("-e", "--elements", metavar='"El1 El2 ..."', default=None,
                        help="elements of LAMMPS atom types 1, 2, ..., as in pair_coeff: needed to read LAMMPS "
                             "dumps without an 'element' column")
